//! JSON schema validation with Flocker messages.
