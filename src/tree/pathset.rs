//! A set of tree paths with constant-time questions about a path: is it in the set, does a
//! member lie strictly below it, does it lie inside a member. Selections use it so that
//! rewriting tens of thousands of selected subtrees stays linear in the tree's size.

use std::collections::HashSet;

/// Paths (segment lists) and all their proper prefixes.
#[derive(Debug, Default)]
pub(crate) struct PathSet {
    exact: HashSet<Vec<String>>,
    /// Every proper prefix of a member.
    above: HashSet<Vec<String>>,
}

impl PathSet {
    pub(crate) fn new(paths: &[Vec<String>]) -> PathSet {
        let mut s = PathSet::default();
        for p in paths {
            s.insert(p.clone());
        }
        s
    }

    pub(crate) fn insert(&mut self, p: Vec<String>) {
        for i in 0..p.len() {
            if !self.above.contains(&p[..i]) {
                self.above.insert(p[..i].to_vec());
            }
        }
        self.exact.insert(p);
    }

    /// `p` is a member.
    pub(crate) fn contains(&self, p: &[String]) -> bool {
        self.exact.contains(p)
    }

    /// A member lies strictly below `p`.
    pub(crate) fn has_below(&self, p: &[String]) -> bool {
        self.above.contains(p)
    }

    /// `p` is a member or lies inside one.
    pub(crate) fn inside(&self, p: &[String]) -> bool {
        (0..=p.len()).any(|i| self.exact.contains(&p[..i]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Vec<String> {
        s.split('.')
            .filter(|x| !x.is_empty())
            .map(String::from)
            .collect()
    }

    #[test]
    fn answers_about_paths() {
        let s = PathSet::new(&[p("a.b"), p("c")]);
        assert!(s.contains(&p("a.b")) && !s.contains(&p("a")));
        assert!(s.has_below(&p("a")) && s.has_below(&p("")) && !s.has_below(&p("a.b")));
        assert!(s.inside(&p("a.b.x")) && s.inside(&p("c")) && !s.inside(&p("a")));
    }
}
