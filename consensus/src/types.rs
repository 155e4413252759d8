//! Small explicit types for Raft's vocabulary, so a term is never passed where an index belongs.

use serde::{Deserialize, Serialize};
use std::fmt;

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(
            Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
        )]
        #[serde(transparent)]
        pub struct $name(pub u64);

        impl $name {
            pub const ZERO: $name = $name(0);

            #[inline]
            pub const fn get(self) -> u64 {
                self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(&self.0, f)
            }
        }

        impl From<u64> for $name {
            fn from(v: u64) -> Self {
                $name(v)
            }
        }

        impl From<$name> for u64 {
            fn from(v: $name) -> u64 {
                v.0
            }
        }
    };
}

id_type!(
    /// A Raft term (Raft §5.1). Term 0 is the sentinel "no term yet"; terms only grow.
    Term
);
id_type!(
    /// A log index (Raft §5.3). Index 0 is the sentinel "before the first entry"; the first real
    /// entry has index 1.
    Index
);
id_type!(
    /// A node's identity within a cluster. Ids start at 1; 0 is the sentinel "nobody" (for example
    /// "voted for nobody" or "leader unknown").
    NodeId
);

impl Index {
    /// The next index. Panics on overflow, which would mean a corrupt index.
    #[inline]
    pub fn next(self) -> Index {
        Index(self.0.checked_add(1).expect("log index overflow"))
    }

    /// The previous index, saturating at the sentinel 0.
    #[inline]
    pub fn prev(self) -> Index {
        Index(self.0.saturating_sub(1))
    }
}
