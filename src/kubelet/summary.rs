//! `/stats/summary`: the Kubelet's stats `v1alpha1.Summary`, read for pod network stats, keyed
//! by pod UID (all containers of a pod share its network namespace). Every numeric field is
//! optional and unknown fields (swap, PSI, whatever comes next) are ignored.

use std::collections::HashMap;

use serde::Deserialize;

#[derive(Debug, Default, Deserialize)]
pub struct Summary {
    pub pods: Option<Vec<PodStats>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PodStats {
    pub pod_ref: Option<PodReference>,
    pub network: Option<NetworkStats>,
}

#[derive(Debug, Default, Deserialize)]
pub struct PodReference {
    pub name: Option<String>,
    pub namespace: Option<String>,
    pub uid: Option<String>,
}

/// The default interface's figures inline, and every interface in `interfaces`.
#[derive(Debug, Default, Deserialize)]
pub struct NetworkStats {
    #[serde(flatten)]
    pub default: InterfaceStats,
    pub interfaces: Option<Vec<InterfaceStats>>,
}

#[derive(Debug, Default, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InterfaceStats {
    pub name: Option<String>,
    pub rx_bytes: Option<u64>,
    pub rx_errors: Option<u64>,
    pub tx_bytes: Option<u64>,
    pub tx_errors: Option<u64>,
}

/// One interface of a pod, named.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodInterface {
    pub name: String,
    pub stats: InterfaceStats,
}

/// Pod UID → its interfaces. cAdvisor's rule applies: loopback, veth and bridge interfaces
/// are not a container's network.
pub fn network_by_pod(summary: Summary) -> HashMap<String, Vec<PodInterface>> {
    let mut by_pod = HashMap::new();
    for pod in summary.pods.unwrap_or_default() {
        let (Some(uid), Some(network)) = (pod.pod_ref.and_then(|r| r.uid), pod.network) else {
            continue;
        };
        let listed = network.interfaces.unwrap_or_default();
        // Older Kubelets give only the default interface, inline.
        let interfaces = if listed.is_empty() {
            vec![network.default]
        } else {
            listed
        };
        let named: Vec<PodInterface> = interfaces
            .into_iter()
            .filter_map(|stats| {
                let name = stats.name.clone().filter(|n| !n.is_empty())?;
                let ignored = crate::cgroup::parse::IGNORED_INTERFACE_PREFIXES
                    .iter()
                    .any(|p| name.starts_with(p));
                (!ignored).then_some(PodInterface { name, stats })
            })
            .collect();
        if !named.is_empty() {
            by_pod.insert(uid, named);
        }
    }
    by_pod
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pod_networks_by_uid_with_missing_and_unknown_fields() {
        let json = r#"{
          "node": {"nodeName": "n1", "swap": {"swapUsageBytes": 0}},
          "pods": [
            {"podRef": {"name": "a", "namespace": "ns", "uid": "u-a"},
             "network": {"time": "2026-01-01T00:00:00Z", "name": "eth0", "rxBytes": 10, "txBytes": 20,
                         "interfaces": [{"name": "eth0", "rxBytes": 10, "rxErrors": 1, "txBytes": 20, "txErrors": 2},
                                        {"name": "net1", "rxBytes": 5},
                                        {"name": "lo", "rxBytes": 99}]},
             "swap": {"swapUsageBytes": 1}, "cpu": {"psi": {"full": {"total": 1}}}},
            {"podRef": {"name": "b", "namespace": "ns", "uid": "u-b"},
             "network": {"name": "eth0", "rxBytes": 7}},
            {"podRef": {"name": "c", "namespace": "ns", "uid": "u-c"}},
            {"network": {"name": "eth0"}}
          ]
        }"#;
        let by_pod = network_by_pod(serde_json::from_str(json).expect("parses"));
        assert_eq!(by_pod.len(), 2);
        let a: Vec<(&str, Option<u64>, Option<u64>)> = by_pod["u-a"]
            .iter()
            .map(|i| (i.name.as_str(), i.stats.rx_bytes, i.stats.tx_errors))
            .collect();
        assert_eq!(a, [("eth0", Some(10), Some(2)), ("net1", Some(5), None)]);
        assert_eq!(by_pod["u-b"][0].stats.rx_bytes, Some(7));
        assert_eq!(by_pod["u-b"][0].stats.tx_bytes, None);
    }
}
