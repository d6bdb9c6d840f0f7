//! Paths of the guest components built from source by this crate's build script.

/// A guest in a language whose toolchain may be missing at build time.
#[derive(Debug, Clone, Copy)]
pub enum Guest {
    /// Built: the component's path.
    Built(&'static str),
    /// Not built: what to install.
    Missing(&'static str),
}

impl Guest {
    /// The component's path; fails the calling test with the install hint when it was not built.
    pub fn path(self) -> &'static str {
        match self {
            Self::Built(path) => path,
            Self::Missing(hint) => panic!("this test needs a guest that was not built: {hint}"),
        }
    }
}

include!(concat!(env!("OUT_DIR"), "/artifacts.rs"));
