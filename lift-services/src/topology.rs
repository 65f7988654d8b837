//! The dependency map: which service calls which, read from the registry.
//!
//! Each environment's lease renewal carries the services it has called and how often
//! ([`EnvReport::calls`](crate::EnvReport), fed by a [`crate::client::ServiceClient`] built
//! with the registration's [`HealthSignals`](crate::health::HealthSignals)), so the map costs
//! no write of its own. [`Topology`] gathers those edges and renders them as Mermaid or as
//! an SVG picture.
//!
//! ```
//! use lift_services::topology::Topology;
//!
//! let map = Topology::from_edges([("orders", "payments", 12), ("orders", "pricing", 3)]);
//! assert!(map.mermaid().contains("orders --> |12| payments"));
//! assert!(map.svg().starts_with("<svg"));
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write;

use crate::model::Instance;

/// Services and the calls between them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Topology {
    services: BTreeSet<String>,
    edges: BTreeMap<(String, String), u64>,
}

impl Topology {
    /// The map of `instances` (tombstones left out): every service, and every callee an
    /// environment reported.
    pub fn from_instances<'a>(instances: impl IntoIterator<Item = &'a Instance>) -> Self {
        let mut map = Topology::default();
        for instance in instances {
            if instance.deregistered {
                continue;
            }
            map.services.insert(instance.service.to_string());
            for env in instance.environments.values() {
                for (callee, n) in &env.calls {
                    map.add(&instance.service, callee, *n);
                }
            }
        }
        map
    }

    /// A map of the given edges (caller, callee, calls).
    pub fn from_edges<'a>(edges: impl IntoIterator<Item = (&'a str, &'a str, u64)>) -> Self {
        let mut map = Topology::default();
        for (caller, callee, n) in edges {
            map.add(caller, callee, n);
        }
        map
    }

    fn add(&mut self, caller: &str, callee: &str, n: u64) {
        self.services.insert(caller.to_owned());
        self.services.insert(callee.to_owned());
        *self
            .edges
            .entry((caller.to_owned(), callee.to_owned()))
            .or_default() += n;
    }

    /// The services.
    pub fn services(&self) -> impl Iterator<Item = &str> {
        self.services.iter().map(String::as_str)
    }

    /// The edges: caller, callee, calls.
    pub fn edges(&self) -> impl Iterator<Item = (&str, &str, u64)> {
        self.edges
            .iter()
            .map(|((a, b), n)| (a.as_str(), b.as_str(), *n))
    }

    /// A Mermaid flowchart.
    pub fn mermaid(&self) -> String {
        let mut out = String::from("graph LR\n");
        for service in &self.services {
            let _ = writeln!(
                out,
                "    {}[\"{}\"]",
                node_id(service),
                mermaid_label(service)
            );
        }
        for ((caller, callee), n) in &self.edges {
            let _ = writeln!(out, "    {} --> |{n}| {}", node_id(caller), node_id(callee));
        }
        out
    }

    /// Each service's column: the longest chain of callers above it (cycles cut).
    fn layers(&self) -> BTreeMap<&str, usize> {
        let mut layer: BTreeMap<&str, usize> =
            self.services.iter().map(|s| (s.as_str(), 0)).collect();
        for _ in 0..self.services.len() {
            let mut changed = false;
            for (caller, callee) in self.edges.keys() {
                let next = layer[caller.as_str()] + 1;
                if next > layer[callee.as_str()] && next < self.services.len() {
                    layer.insert(callee.as_str(), next);
                    changed = true;
                }
            }
            if !changed {
                break;
            }
        }
        layer
    }

    /// An SVG picture: services as boxes in columns by call depth, calls as arrows
    /// labelled with their count.
    pub fn svg(&self) -> String {
        const W: usize = 160;
        const H: usize = 40;
        const GAP_X: usize = 80;
        const GAP_Y: usize = 30;
        let layers = self.layers();
        let mut rows: BTreeMap<usize, usize> = BTreeMap::new();
        let mut place: BTreeMap<&str, (usize, usize)> = BTreeMap::new();
        for (service, column) in &layers {
            let row = rows.entry(*column).or_default();
            place.insert(
                service,
                (20 + column * (W + GAP_X), 20 + *row * (H + GAP_Y)),
            );
            *row += 1;
        }
        let width = 40 + (rows.len().max(1)) * (W + GAP_X);
        let height = 40 + rows.values().max().copied().unwrap_or(1) * (H + GAP_Y);
        let mut out = format!(
            "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{height}\" font-family=\"sans-serif\" font-size=\"13\">\n\
             <defs><marker id=\"arrow\" viewBox=\"0 0 10 10\" refX=\"10\" refY=\"5\" markerWidth=\"8\" markerHeight=\"8\" orient=\"auto\"><path d=\"M0,0 L10,5 L0,10 z\" fill=\"#555\"/></marker></defs>\n"
        );
        for ((caller, callee), n) in &self.edges {
            let (x1, y1) = place[caller.as_str()];
            let (x2, y2) = place[callee.as_str()];
            let (sx, sy, ex, ey) = if caller == callee {
                (x1 + W / 2, y1, x1 + W, y1 + H / 2)
            } else if x2 > x1 {
                (x1 + W, y1 + H / 2, x2, y2 + H / 2)
            } else {
                (x1, y1 + H / 2, x2 + W, y2 + H / 2)
            };
            let _ = writeln!(
                out,
                "<line x1=\"{sx}\" y1=\"{sy}\" x2=\"{ex}\" y2=\"{ey}\" stroke=\"#555\" marker-end=\"url(#arrow)\"/>\
                 <text x=\"{}\" y=\"{}\" fill=\"#333\">{n}</text>",
                (sx + ex) / 2,
                (sy + ey) / 2 - 4
            );
        }
        for (service, (x, y)) in &place {
            let _ = writeln!(
                out,
                "<rect x=\"{x}\" y=\"{y}\" width=\"{W}\" height=\"{H}\" rx=\"6\" fill=\"#eef4ff\" stroke=\"#3465a4\"/>\
                 <text x=\"{}\" y=\"{}\" text-anchor=\"middle\">{}</text>",
                x + W / 2,
                y + H / 2 + 5,
                escape(service)
            );
        }
        out.push_str("</svg>\n");
        out
    }
}

/// A Mermaid node id: the name's letters and digits as they are, anything else escaped
/// (`_` as `__`, `-` as `_h`, `.` as `_d`, another character as `_u<hex>_`), so that two
/// names never share an id (`pay-ments` and `pay_ments` did, and their edges merged).
fn node_id(service: &str) -> String {
    // `end` closes a subgraph in Mermaid: a service of that name gets `end_` (a real `_`
    // is doubled below, so no other name's id is `end_`).
    if service.eq_ignore_ascii_case("end") {
        return format!("{service}_");
    }
    let mut id = String::with_capacity(service.len());
    for c in service.chars() {
        match c {
            c if c.is_ascii_alphanumeric() => id.push(c),
            '_' => id.push_str("__"),
            '-' => id.push_str("_h"),
            '.' => id.push_str("_d"),
            other => {
                let _ = write!(id, "_u{:x}_", u32::from(other));
            }
        }
    }
    id
}

/// A name as the text of a quoted Mermaid label: quotes, `#` and angle brackets as
/// Mermaid's entity codes, control characters left out. Names come from registry items,
/// and one written to close its label and start a statement of its own (a `click` link)
/// stays text.
fn mermaid_label(name: &str) -> String {
    let mut label = String::with_capacity(name.len());
    for c in name.chars() {
        match c {
            '"' => label.push_str("#quot;"),
            '#' => label.push_str("#35;"),
            '<' => label.push_str("#lt;"),
            '>' => label.push_str("#gt;"),
            c if c.is_control() => {}
            c => label.push(c),
        }
    }
    label
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Endpoints, EnvReport};

    #[test]
    fn edges_come_from_the_environments_reports() {
        let mut orders = Instance::new("orders", "o1", "eu-west-1", Endpoints::lambda("arn"));
        let mut report = EnvReport::new(1, 0, 0.0, 0);
        report.calls.insert("payments".into(), 5);
        orders.environments.insert("e1".into(), report.clone());
        report.calls.insert("pricing".into(), 1);
        orders.environments.insert("e2".into(), report);
        let payments = Instance::new("payments", "p1", "eu-west-1", Endpoints::lambda("arn"));
        let mut gone = Instance::new("legacy", "l1", "eu-west-1", Endpoints::lambda("arn"));
        gone.deregistered = true;
        let map = Topology::from_instances([&orders, &payments, &gone]);
        assert_eq!(
            map.edges().collect::<Vec<_>>(),
            [("orders", "payments", 10), ("orders", "pricing", 1)]
        );
        assert_eq!(
            map.services().collect::<Vec<_>>(),
            ["orders", "payments", "pricing"]
        );
        let mermaid = map.mermaid();
        assert!(mermaid.starts_with("graph LR\n"));
        assert!(
            mermaid.contains("    orders --> |10| payments\n"),
            "{mermaid}"
        );
        let svg = map.svg();
        assert_eq!(svg.matches("<rect").count(), 3);
        assert_eq!(svg.matches("<line").count(), 2);
    }

    /// Names that differ only in their punctuation are different nodes.
    #[test]
    fn mermaid_ids_tell_names_apart() {
        let names = [
            "pay-ments",
            "pay_ments",
            "pay.ments",
            "pay__ments",
            "pay_hments",
            "pay ments",
        ];
        let ids: std::collections::BTreeSet<String> = names.iter().map(|n| node_id(n)).collect();
        assert_eq!(ids.len(), names.len(), "{ids:?}");
        assert_eq!(node_id("orders"), "orders");
        assert_eq!(node_id("end"), "end_");
        assert_ne!(node_id("end"), node_id("end_"));
        let map = Topology::from_edges([("pay-ments", "pay_ments", 1)]);
        assert!(
            map.mermaid()
                .contains("    pay_hments --> |1| pay__ments\n")
        );
    }

    /// A service name written to close its label and add statements of its own (a link)
    /// stays the text of one node.
    #[test]
    fn a_name_cannot_add_mermaid_statements() {
        let name = "pay\"]\n    click orders \"https://example.com\" #x <b>";
        let mermaid = Topology::from_edges([("orders", name, 1)]).mermaid();
        assert_eq!(mermaid.lines().count(), 4, "{mermaid}");
        assert!(!mermaid.contains("click orders \""), "{mermaid}");
        assert!(
            mermaid.contains(
                "[\"pay#quot;]    click orders #quot;https://example.com#quot; #35;x #lt;b#gt;\"]"
            ),
            "{mermaid}"
        );
    }

    #[test]
    fn callees_sit_right_of_their_callers_even_with_cycles() {
        let map = Topology::from_edges([("a", "b", 1), ("b", "c", 1), ("c", "a", 1)]);
        let layers = map.layers();
        assert!(layers.values().all(|l| *l < 3));
        let chain = Topology::from_edges([("a", "b", 1), ("b", "c", 1)]);
        let layers = chain.layers();
        assert_eq!((layers["a"], layers["b"], layers["c"]), (0, 1, 2));
        assert!(
            Topology::from_edges([("a<b", "c", 1)])
                .svg()
                .contains("a&lt;b")
        );
    }
}
