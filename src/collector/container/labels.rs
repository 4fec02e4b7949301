//! A container's label block, rendered once per inventory and merged at every sample with
//! the sample's own labels.

use crate::exposition::family;
use crate::identity::discovery::Kind;
use crate::identity::inventory::InventoryEntry;

/// A container's labels (the six every container series has, then the extra ones), each
/// written once per inventory as `key="escaped value"`, in name order, for all its ~50
/// series.
pub(super) struct BaseLabels {
    /// All of them, comma-separated: the labels of the ~40 series of a container that have
    /// none of their own, copied in one piece.
    text: Box<[u8]>,
    /// Where each label's `key="value"` lies in `text`, and its name's length.
    labels: Box<[(std::ops::Range<usize>, usize)]>,
}

impl BaseLabels {
    pub(super) fn new(entry: &InventoryEntry, extra_keys: &[&str]) -> Self {
        let m = &entry.metadata;
        let container = match entry.cgroup.kind {
            Kind::Pod => "",
            _ => m.container.as_str(),
        };
        let own = &m.extra_labels;
        let extra = extra_keys.iter().map(|key| {
            let value = own.iter().find(|(k, _)| k == key).map_or("", |(_, v)| v.as_str());
            (*key, value)
        });
        let mut pairs: Vec<(&str, &str)> = vec![
            ("container", container),
            ("id", entry.cgroup.id.as_str()),
            ("image", m.image.as_str()),
            ("name", m.name.as_str()),
            ("namespace", m.namespace.as_str()),
            ("pod", m.pod.as_str()),
        ];
        pairs.extend(extra);
        pairs.sort_unstable_by_key(|(k, _)| *k);
        let mut text = Vec::new();
        let mut labels = Vec::with_capacity(pairs.len());
        for (i, (key, value)) in pairs.into_iter().enumerate() {
            if i > 0 {
                text.push(b',');
            }
            let start = text.len();
            family::write_label(key, value, &mut text);
            labels.push((start..text.len(), key.len()));
        }
        Self {
            text: text.into_boxed_slice(),
            labels: labels.into_boxed_slice(),
        }
    }

    /// Asks the CPU for these labels ahead of their container's samples (see
    /// [`crate::prefetch`]).
    pub(super) fn prefetch(&self) {
        crate::prefetch::lines(self.text.as_ptr(), self.text.len());
        crate::prefetch::lines(self.labels.as_ptr(), std::mem::size_of_val(&*self.labels));
    }

    /// Writes these labels merged, by name, with a series' own (given in name order).
    pub(super) fn write_with(&self, own: &[(&str, &str)], out: &mut Vec<u8>) {
        if own.is_empty() {
            out.extend_from_slice(&self.text);
            return;
        }
        let mut own = own.iter().peekable();
        let mut first = true;
        let mut comma = |out: &mut Vec<u8>| {
            if !std::mem::take(&mut first) {
                out.push(b',');
            }
        };
        for (range, name_len) in self.labels.iter() {
            let name = &self.text[range.start..range.start + name_len];
            while let Some((key, value)) = own.next_if(|(key, _)| sorts_before(key.as_bytes(), name)) {
                comma(out);
                family::write_label(key, value, out);
            }
            comma(out);
            out.extend_from_slice(&self.text[range.clone()]);
        }
        for (key, value) in own {
            comma(out);
            family::write_label(key, value, out);
        }
    }
}

/// `key < name`, by their first bytes where those differ (the label names merged here mostly
/// do: `cpu`, `device`, `interface` against `container`, `id`, `name`, ...), which spares the
/// call of a comparison of slices at every sample (3% of a cold scrape's user CPU by perf).
#[inline]
fn sorts_before(key: &[u8], name: &[u8]) -> bool {
    match (key.first(), name.first()) {
        (Some(k), Some(n)) if k != n => k < n,
        _ => key < name,
    }
}

#[cfg(test)]
mod tests {
    use super::sorts_before;

    #[test]
    fn sorts_before_orders_as_byte_strings_do() {
        let names = [
            "",
            "c",
            "container",
            "cpu",
            "device",
            "id",
            "image",
            "interface",
            "name",
            "namespace",
            "pod",
            "scope",
            "state",
            "Z",
            "é",
        ];
        for a in names {
            for b in names {
                assert_eq!(sorts_before(a.as_bytes(), b.as_bytes()), a < b, "{a:?} < {b:?}");
            }
        }
    }
}
