//! smartnic mode: the pod gets an SR-IOV VF, its representor goes on the integration
//! bridge, and OVS offloads the flows to the NIC (`other_config:hw-offload=true`).
//!
//! Everything about the hardware is read from sysfs under a configurable root, so tests run
//! against a fake tree (veth pairs stand in for VF/representor pairs):
//! - `class/net/<pf>/compat/devlink/mode`: `switchdev` (the mlx5 compat file; `legacy` = not usable)
//! - `class/net/<pf>/device/sriov_numvfs`: how many VFs exist
//! - `class/net/<pf>/device/virtfn<i>/net/<netdev>`: the netdev of VF `i`
//! - `class/net/<dev>/phys_switch_id`, `phys_port_name`: the PF is `p<n>`, the representor
//!   of its VF `i` is `pf<n>vf<i>` with the same switch id.

use std::path::{Path, PathBuf};

use crate::error::CniError;

/// `external_ids` keys of a smartnic port (on the representor's Interface).
pub const KEY_VF_NETDEV: &str = "ycloud.io/vf-netdev";
pub const KEY_VF_INDEX: &str = "ycloud.io/vf-index";
pub const KEY_PF: &str = "ycloud.io/pf";

/// Our error codes for the hardware (the spec leaves 100+ to plugins).
pub mod codes {
    /// No free VF on the PF.
    pub const VF_EXHAUSTED: u32 = 110;
    /// The PF is not in switchdev mode (or no PF is).
    pub const NOT_SWITCHDEV: u32 = 111;
    /// The VF's representor netdev was not found.
    pub const NO_REPRESENTOR: u32 = 112;
    /// sysfs does not look like an SR-IOV PF.
    pub const SYSFS: u32 = 113;
}

/// A view of sysfs rooted at `root` (`/sys` in production).
#[derive(Debug, Clone)]
pub struct Sysfs {
    pub root: PathBuf,
}

/// One VF of a PF.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Vf {
    pub pf: String,
    pub index: u32,
    pub netdev: String,
}

impl Sysfs {
    fn net(&self, dev: &str) -> PathBuf {
        self.root.join("class/net").join(dev)
    }

    fn read(&self, path: &Path) -> Result<String, CniError> {
        std::fs::read_to_string(path)
            .map(|s| s.trim().to_string())
            .map_err(|e| CniError::new(codes::SYSFS, format!("reading {}: {e}", path.display())))
    }

    fn read_opt(&self, path: &Path) -> Option<String> {
        std::fs::read_to_string(path)
            .ok()
            .map(|s| s.trim().to_string())
    }

    fn numvfs(&self, pf: &str) -> Option<u32> {
        self.read_opt(&self.net(pf).join("device/sriov_numvfs"))?
            .parse()
            .ok()
    }

    fn is_switchdev(&self, pf: &str) -> bool {
        self.read_opt(&self.net(pf).join("compat/devlink/mode"))
            .as_deref()
            == Some("switchdev")
    }

    /// The PF to use: `wanted`, which must have VFs and be in switchdev mode, or the first
    /// (by name) that does.
    pub fn find_pf(&self, wanted: Option<&str>) -> Result<String, CniError> {
        if let Some(pf) = wanted {
            if !self.net(pf).exists() {
                return Err(CniError::new(
                    codes::SYSFS,
                    format!("PF {pf}: no {}", self.net(pf).display()),
                ));
            }
            if self.numvfs(pf).unwrap_or(0) == 0 {
                return Err(CniError::new(
                    codes::SYSFS,
                    format!("PF {pf} has no VFs (device/sriov_numvfs is 0 or missing)"),
                ));
            }
            if !self.is_switchdev(pf) {
                let mode = self
                    .read_opt(&self.net(pf).join("compat/devlink/mode"))
                    .unwrap_or_else(|| "unknown".into());
                return Err(CniError::new(
                    codes::NOT_SWITCHDEV,
                    format!("PF {pf} is in {mode} mode, not switchdev: its VFs' representors cannot be plugged into OVS"),
                )
                .with_details(format!("devlink dev eswitch set pci/<{pf}'s PCI address> mode switchdev")));
            }
            return Ok(pf.to_string());
        }
        let mut names: Vec<String> = std::fs::read_dir(self.root.join("class/net"))
            .map_err(|e| {
                CniError::new(
                    codes::SYSFS,
                    format!("listing {}/class/net: {e}", self.root.display()),
                )
            })?
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .collect();
        names.sort();
        let with_vfs: Vec<&String> = names
            .iter()
            .filter(|n| self.numvfs(n).unwrap_or(0) > 0)
            .collect();
        with_vfs
            .iter()
            .find(|n| self.is_switchdev(n))
            .map(|n| n.to_string())
            .ok_or_else(|| {
                CniError::new(
                    codes::NOT_SWITCHDEV,
                    if with_vfs.is_empty() {
                        format!("no SR-IOV PF under {}/class/net", self.root.display())
                    } else {
                        format!(
                            "no SR-IOV PF in switchdev mode (PFs with VFs: {})",
                            with_vfs
                                .iter()
                                .map(|s| s.as_str())
                                .collect::<Vec<_>>()
                                .join(", ")
                        )
                    },
                )
            })
    }

    /// dpu-host mode: the PF to take VFs from, switchdev or not (the eswitch, and so the
    /// representors, live on the DPU): `wanted`, or the first (by name) with VFs.
    pub fn find_host_pf(&self, wanted: Option<&str>) -> Result<String, CniError> {
        if let Some(pf) = wanted {
            if self.numvfs(pf).unwrap_or(0) == 0 {
                return Err(CniError::new(
                    codes::SYSFS,
                    format!(
                        "PF {pf} has no VFs under {} (device/sriov_numvfs is 0 or missing)",
                        self.net(pf).display()
                    ),
                ));
            }
            return Ok(pf.to_string());
        }
        let mut names: Vec<String> = std::fs::read_dir(self.root.join("class/net"))
            .map_err(|e| {
                CniError::new(
                    codes::SYSFS,
                    format!("listing {}/class/net: {e}", self.root.display()),
                )
            })?
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .collect();
        names.sort();
        names
            .into_iter()
            .find(|n| self.numvfs(n).unwrap_or(0) > 0)
            .ok_or_else(|| {
                CniError::new(
                    codes::SYSFS,
                    format!("no SR-IOV PF under {}/class/net", self.root.display()),
                )
            })
    }

    /// The PF's number: `n` of its `phys_port_name` `p<n>` (0 when it has none).
    pub fn pf_number(&self, pf: &str) -> u32 {
        self.read_opt(&self.net(pf).join("phys_port_name"))
            .and_then(|p| p.strip_prefix('p')?.parse().ok())
            .unwrap_or(0)
    }

    /// The PF's VFs in index order.
    pub fn vfs(&self, pf: &str) -> Result<Vec<Vf>, CniError> {
        let n = self.numvfs(pf).unwrap_or(0);
        let mut out = Vec::new();
        for i in 0..n {
            let dir = self.net(pf).join(format!("device/virtfn{i}/net"));
            let netdev = std::fs::read_dir(&dir)
                .ok()
                .and_then(|mut d| d.next()?.ok()?.file_name().into_string().ok())
                .ok_or_else(|| {
                    CniError::new(
                        codes::SYSFS,
                        format!("VF {i} of {pf}: no netdev under {}", dir.display()),
                    )
                })?;
            out.push(Vf {
                pf: pf.to_string(),
                index: i,
                netdev,
            });
        }
        Ok(out)
    }

    /// The representor of VF `index` of `pf`: same `phys_switch_id`, `phys_port_name`
    /// `pf<n>vf<index>` where the PF's own is `p<n>`.
    pub fn representor(&self, pf: &str, index: u32) -> Result<String, CniError> {
        let switch_id = self.read(&self.net(pf).join("phys_switch_id"))?;
        let port = self.read(&self.net(pf).join("phys_port_name"))?;
        let pf_num = port.strip_prefix('p').unwrap_or(&port);
        let want = format!("pf{pf_num}vf{index}");
        let mut names: Vec<String> = std::fs::read_dir(self.root.join("class/net"))
            .map_err(|e| CniError::new(codes::SYSFS, format!("listing class/net: {e}")))?
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .collect();
        names.sort();
        names
            .into_iter()
            .find(|n| {
                n != pf
                    && self.read_opt(&self.net(n).join("phys_switch_id")).as_deref() == Some(switch_id.as_str())
                    && self.read_opt(&self.net(n).join("phys_port_name")).as_deref() == Some(want.as_str())
            })
            .ok_or_else(|| {
                CniError::new(
                    codes::NO_REPRESENTOR,
                    format!("no representor for VF {index} of {pf} (phys_switch_id {switch_id}, phys_port_name {want})"),
                )
            })
    }
}

#[cfg(test)]
#[path = "smartnic/tests.rs"]
mod tests;
