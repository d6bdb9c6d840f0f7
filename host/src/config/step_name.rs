//! How steps are named: by the interface that declares them and the function.

use std::fmt;

/// A step function, e.g. `example:provision/steps` + `provision`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StepName {
    /// The WIT interface, as the component names it (version included).
    pub interface: String,
    /// The function inside the interface.
    pub function: String,
}

impl StepName {
    /// Names a step by its interface and function.
    pub fn new(interface: impl Into<String>, function: impl Into<String>) -> Self {
        Self { interface: interface.into(), function: function.into() }
    }

    /// The name users write: the qualified `iface.func`, or the bare function name.
    pub fn matches(&self, name: &str) -> bool {
        name == self.function || name == self.to_string()
    }
}

/// Shown as `example:provision/steps.provision`, the form the journal stores.
impl fmt::Display for StepName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.interface, self.function)
    }
}

#[cfg(test)]
mod tests {
    use super::StepName;

    #[test]
    fn matches_short_and_qualified_names() {
        let step = StepName::new("example:provision/steps", "provision");
        assert_eq!(step.to_string(), "example:provision/steps.provision");
        assert!(step.matches("provision"));
        assert!(step.matches("example:provision/steps.provision"));
        assert!(!step.matches("steps.provision"));
        assert!(!step.matches("provisio"));
    }
}
