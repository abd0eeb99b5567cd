//! `ycloudctl status` from the Kubernetes API (feature `kube`): the same table as from a
//! manifest directory, built from the `.status` the controller writes on each
//! `YusurService` (conditions, addresses, backends ready/total, scenarios).
//!
//! One API call: `list yusurservices.ycloud.io` (all namespaces, or one). A single service
//! is found by listing its namespace, so the user needs no `get` beyond `list`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use kube::api::{Api, ListParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use ycloud_crds::YusurService;

use super::CtlError;
use super::status::{StatusReport, service_state};

/// Which services to show.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Query {
    /// Only this namespace; `None`: all namespaces.
    pub namespace: Option<String>,
    /// Only this service, `namespace/name`.
    pub service: Option<String>,
}

impl Query {
    /// The namespace to list: the service's, or the one asked for. A service in another
    /// namespace than `-n` is a usage error (it names both).
    fn list_namespace(&self) -> Result<Option<String>, CtlError> {
        let from_service = self
            .service
            .as_deref()
            .and_then(|s| s.split_once('/'))
            .map(|(ns, _)| ns.to_owned());
        match (&self.namespace, from_service) {
            (Some(n), Some(s)) if *n != s => Err(CtlError::Usage(format!(
                "service {} is not in namespace {n} (given with -n)",
                self.service.as_deref().unwrap_or_default()
            ))),
            (_, Some(s)) => Ok(Some(s)),
            (n, None) => Ok(n.clone()),
        }
    }
}

/// The API configuration: the kubeconfig file given (its current context, or `context`),
/// else what kube-rs infers (`$KUBECONFIG`, `~/.kube/config`, then the in-cluster service
/// account). Errors name the file or say what was tried.
pub async fn config(
    kubeconfig: Option<&Path>,
    context: Option<&str>,
) -> Result<kube::Config, CtlError> {
    let options = KubeConfigOptions {
        context: context.map(str::to_owned),
        ..Default::default()
    };
    match kubeconfig {
        Some(path) => {
            let file = Kubeconfig::read_from(path).map_err(|e| {
                CtlError::KubeConfig(format!("reading kubeconfig {}: {e}", path.display()))
            })?;
            kube::Config::from_custom_kubeconfig(file, &options)
                .await
                .map_err(|e| CtlError::KubeConfig(format!("kubeconfig {}: {e}", path.display())))
        }
        None if context.is_some() => kube::Config::from_kubeconfig(&options)
            .await
            .map_err(|e| CtlError::KubeConfig(format!("$KUBECONFIG or ~/.kube/config: {e}"))),
        None => kube::Config::infer().await.map_err(|e| {
            CtlError::KubeConfig(format!(
                "{e} (tried $KUBECONFIG, ~/.kube/config and the in-cluster service account; give --kubeconfig, or --dir for a manifest directory)"
            ))
        }),
    }
}

/// Lists the services through `client` (whose API server is `server`, for messages) and
/// builds the report. The one function the binary and the tests call.
pub async fn read(client: kube::Client, server: &str, q: &Query) -> Result<StatusReport, CtlError> {
    if let Some(s) = &q.service {
        super::nb_rows::check_service_name(s)?;
    }
    let ns = q.list_namespace()?;
    let api: Api<YusurService> = match &ns {
        Some(ns) => Api::namespaced(client, ns),
        None => Api::all(client),
    };
    let where_ = match &ns {
        Some(ns) => format!("namespace {ns}"),
        None => "all namespaces".to_owned(),
    };
    let list = api
        .list(&ListParams::default())
        .await
        .map_err(|e| api_error(e, server, &where_))?;
    let mut services: Vec<_> = list
        .items
        .iter()
        .filter_map(|svc| serde_json::to_value(svc).ok())
        .map(|doc| service_state(&doc))
        .filter(|s| q.service.as_deref().is_none_or(|want| want == s.name))
        .collect();
    services.sort_by(|a, b| a.name.cmp(&b.name));
    if let Some(want) = &q.service
        && services.is_empty()
    {
        return Err(CtlError::NotFound(format!(
            "service {want}: no YusurService of that name on the API server {server}"
        )));
    }
    Ok(StatusReport {
        status_dir: PathBuf::new(),
        api_server: Some(server.to_owned()),
        controller: None,
        services,
    })
}

/// What a failed list means, in the user's terms: the CRD is missing (404 on the list of a
/// resource type), the user may not list (403), or the server could not be reached.
fn api_error(e: kube::Error, server: &str, where_: &str) -> CtlError {
    match &e {
        kube::Error::Api(s) if s.code == 404 => CtlError::NotFound(format!(
            "the API server {server} does not serve yusurservices.ycloud.io: the ycloud CRDs are not installed (charts/ycloud/crds, docs/install.md)"
        )),
        kube::Error::Api(s) if s.code == 403 => CtlError::Kube {
            what: format!(
                "listing yusurservices.ycloud.io in {where_} is forbidden (the user needs `list` on yusurservices, docs/ycloudctl.md)"
            ),
            server: server.to_owned(),
            source: Box::new(e),
        },
        _ => CtlError::Kube {
            what: format!("listing yusurservices.ycloud.io in {where_}"),
            server: server.to_owned(),
            source: Box::new(e),
        },
    }
}

/// `status` for the binary: config, client, list, bounded by `timeout` (an unreachable
/// server must not hang a command-line tool).
pub fn read_blocking(
    kubeconfig: Option<&Path>,
    context: Option<&str>,
    q: &Query,
    timeout: Duration,
) -> Result<StatusReport, CtlError> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(CtlError::Runtime)?;
    rt.block_on(async {
        let mut cfg = config(kubeconfig, context).await?;
        let server = cfg.cluster_url.to_string();
        cfg.connect_timeout = Some(timeout);
        cfg.read_timeout = Some(timeout);
        let client = kube::Client::try_from(cfg).map_err(|e| CtlError::Kube {
            what: "building a client".to_owned(),
            server: server.clone(),
            source: Box::new(e),
        })?;
        tokio::time::timeout(timeout, read(client, &server, q))
            .await
            .map_err(|_| CtlError::ApiTimeout {
                server: server.clone(),
                timeout,
            })?
    })
}
