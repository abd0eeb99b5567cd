//! `ycloud-cni`: the per-node half of ycloud. The CNI plugin binary forwards requests to
//! the node daemon, which plumbs pod interfaces onto `br-int`, gives the node access to
//! ClusterIPs through its management port, and runs health probes of local backends.
