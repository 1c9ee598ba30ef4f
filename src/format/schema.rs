//! Schema tags: which serializer versions wrote a set of records.

/// Which serializer versions wrote a set of records (a segment, a changelog file, a region of
/// memory): per state id, ascending, the versions of that state's serializers in the order
/// its kind defines. The store stamps records with the tag current when they are written and
/// carries it through flush and compaction; it does not interpret it.
#[derive(Debug, Clone, PartialEq, Eq, Default, Hash)]
pub struct SchemaTag {
    versions: Vec<(u16, Vec<u32>)>,
}

impl SchemaTag {
    /// A tag from per-state versions, in any order; a state listed twice keeps its last entry.
    pub fn new(versions: impl IntoIterator<Item = (u16, Vec<u32>)>) -> Self {
        let mut versions: Vec<(u16, Vec<u32>)> = versions.into_iter().collect();
        versions.reverse();
        versions.sort_by_key(|(state, _)| *state);
        versions.dedup_by_key(|(state, _)| *state);
        SchemaTag { versions }
    }

    /// Per state id, ascending, the versions of its serializers.
    pub fn versions(&self) -> &[(u16, Vec<u32>)] {
        &self.versions
    }

    /// The versions of state `state`'s serializers, if the tag lists it.
    pub fn of(&self, state: u16) -> Option<&[u32]> {
        self.versions.binary_search_by_key(&state, |(s, _)| *s).ok().map(|i| &self.versions[i].1[..])
    }

    /// Whether records tagged `self` may be read as tagged `other`: every state `self` lists
    /// has the same versions in `other`.
    pub fn is_covered_by(&self, other: &SchemaTag) -> bool {
        self.versions.iter().all(|(s, v)| other.of(*s) == Some(&v[..]))
    }

    /// The tag of records tagged `self` together with records tagged `other`: every state of
    /// either; `None` if a state is listed in both with different versions (such records
    /// cannot share one tag).
    pub fn union(&self, other: &SchemaTag) -> Option<SchemaTag> {
        let mut out = self.versions.clone();
        for (s, v) in &other.versions {
            match self.of(*s) {
                Some(mine) if mine != &v[..] => return None,
                Some(_) => {}
                None => out.push((*s, v.clone())),
            }
        }
        Some(SchemaTag::new(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn union_keeps_every_state_and_refuses_a_conflict() {
        let a = SchemaTag::new([(2, vec![1, 1]), (1, vec![1])]);
        let b = SchemaTag::new([(3, vec![2]), (1, vec![1])]);
        let u = a.union(&b).unwrap();
        assert_eq!(u.versions(), &[(1, vec![1]), (2, vec![1, 1]), (3, vec![2])]);
        assert!(a.is_covered_by(&u) && b.is_covered_by(&u) && !u.is_covered_by(&a));
        let c = SchemaTag::new([(1, vec![2])]);
        assert_eq!(a.union(&c), None);
        assert_eq!(SchemaTag::default().union(&a).as_ref(), Some(&a));
    }
}
