//! Reading a list's text from where the configuration says it lives.
