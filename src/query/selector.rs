//! Selectors: which levels of the key space a query covers, as cc-metric-store's `util.Selector`.
//!
//! A selector is a namespace and a list of elements, one per level from the top: a single name, a group of
//! names (`["cpu0", "cpu1"]`) or a wildcard (any name). Levels below the last element are all included
//! (a query aggregates them when the selected level lacks the metric).

use crate::keys::{validate_name, HostKey, JobKey, Key, KeyError, Namespace, SeriesPath, ServiceKey, MAX_SEGMENTS};

/// One level of a selector.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum SelectorElement {
    /// Exactly this name.
    Name(String),
    /// Any of these names.
    Group(Vec<String>),
    /// Any name.
    Any,
}

impl SelectorElement {
    /// Whether a level name matches.
    pub fn matches(&self, name: &str) -> bool {
        match self {
            SelectorElement::Name(n) => n == name,
            SelectorElement::Group(g) => g.iter().any(|n| n == name),
            SelectorElement::Any => true,
        }
    }
}

/// A path prefix with groups and wildcards.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Selector {
    namespace: Namespace,
    elements: Vec<SelectorElement>,
}

impl Selector {
    /// A selector from elements; every name must be a valid key name, at most `MAX_SEGMENTS` elements.
    pub fn new(namespace: Namespace, elements: Vec<SelectorElement>) -> Result<Selector, KeyError> {
        if elements.len() > MAX_SEGMENTS {
            return Err(KeyError::TooManySegments { len: elements.len(), max: MAX_SEGMENTS });
        }
        for e in &elements {
            match e {
                SelectorElement::Name(n) => validate_name("selector", n)?,
                SelectorElement::Group(g) => {
                    for n in g {
                        validate_name("selector group", n)?;
                    }
                }
                SelectorElement::Any => {}
            }
        }
        Ok(Selector { namespace, elements })
    }

    /// The selector of exactly one level (a key's path).
    pub fn exact(path: &SeriesPath) -> Selector {
        Selector {
            namespace: path.namespace(),
            elements: path.segments().iter().map(|s| SelectorElement::Name(s.clone())).collect(),
        }
    }

    /// Every host of a cluster (`[cluster, *]`), as cc-metric-store's `for-all-nodes`.
    pub fn all_hosts(cluster: &str) -> Result<Selector, KeyError> {
        Selector::new(Namespace::Host, vec![SelectorElement::Name(cluster.to_owned()), SelectorElement::Any])
    }

    /// Appends an element (one level further down).
    pub fn child(mut self, e: SelectorElement) -> Result<Selector, KeyError> {
        let mut elements = std::mem::take(&mut self.elements);
        elements.push(e);
        Selector::new(self.namespace, elements)
    }

    /// The namespace.
    pub fn namespace(&self) -> Namespace {
        self.namespace
    }

    /// The elements, top level first.
    pub fn elements(&self) -> &[SelectorElement] {
        &self.elements
    }
}

impl From<&HostKey> for Selector {
    fn from(k: &HostKey) -> Self {
        Selector::exact(&k.path())
    }
}

impl From<&JobKey> for Selector {
    fn from(k: &JobKey) -> Self {
        Selector::exact(&k.path())
    }
}

impl From<&ServiceKey> for Selector {
    fn from(k: &ServiceKey) -> Self {
        Selector::exact(&k.path())
    }
}

impl From<&SeriesPath> for Selector {
    fn from(p: &SeriesPath) -> Self {
        Selector::exact(p)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn elements_match() {
        assert!(SelectorElement::Name("a".into()).matches("a"));
        assert!(!SelectorElement::Name("a".into()).matches("b"));
        assert!(SelectorElement::Group(vec!["a".into(), "b".into()]).matches("b"));
        assert!(!SelectorElement::Group(vec![]).matches("b"));
        assert!(SelectorElement::Any.matches("x"));
    }

    #[test]
    fn bad_names_are_refused() {
        assert!(Selector::new(Namespace::Host, vec![SelectorElement::Name("../x".into())]).is_err());
        assert!(Selector::new(Namespace::Host, vec![SelectorElement::Group(vec!["ok".into(), "".into()])]).is_err());
        assert!(Selector::new(Namespace::Host, vec![SelectorElement::Any; 9]).is_err());
    }

    #[test]
    fn keys_become_exact_selectors() {
        let k = HostKey::new("emmy", "n1").and_then(|k| k.component("hwthread", 3)).expect("key");
        let s = Selector::from(&k);
        assert_eq!(s.namespace(), Namespace::Host);
        assert_eq!(s.elements().len(), 3);
        assert_eq!(s.elements()[2], SelectorElement::Name("hwthread3".into()));
    }
}
