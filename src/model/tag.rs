//! The configuration tag (`X-Configuration-Tag`).
//!
//! Flocker hashed the whole configuration, so an A-B-A change sequence could give a tag
//! back. Ours names the configuration *version*: the Raft log index of the last command
//! that changed the configuration. A committed index holds one entry forever, so a tag is
//! never reused, and every replica renders the same tag for the same version. The first 16
//! hex digits identify the cluster, so a tag from another cluster never matches. The format
//! stays Flocker's: 32 lower-case hex digits, opaque to clients.

use uuid::Uuid;

/// Renders and parses tags for one cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TagFormat {
    cluster: u64,
}

impl TagFormat {
    pub fn new(cluster_id: Uuid) -> Self {
        let (hi, lo) = cluster_id.as_u64_pair();
        TagFormat { cluster: hi ^ lo }
    }

    pub fn render(&self, version: u64) -> String {
        format!("{:016x}{:016x}", self.cluster, version)
    }

    /// The version a tag names, if it is a well-formed tag of this cluster.
    pub fn parse(&self, tag: &str) -> Option<u64> {
        if tag.len() != 32 || !tag.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            return None;
        }
        let cluster = u64::from_str_radix(&tag[..16], 16).ok()?;
        let version = u64::from_str_radix(&tag[16..], 16).ok()?;
        (cluster == self.cluster).then_some(version)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_round_trip_and_belong_to_their_cluster() {
        let a = TagFormat::new(Uuid::new_v4());
        let b = TagFormat::new(Uuid::new_v4());
        for version in [0, 1, 41, u64::MAX] {
            let tag = a.render(version);
            assert_eq!(tag.len(), 32);
            assert_eq!(a.parse(&tag), Some(version));
            assert_eq!(b.parse(&tag), None);
        }
        assert_eq!(a.parse("willnotmatch"), None);
        assert_eq!(a.parse(&a.render(7).to_uppercase()), None);
    }
}
