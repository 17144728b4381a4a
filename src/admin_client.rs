//! Empty: its one user, `replay`, now selects events through
//! `query::select` (which reads the admin listener with `admin_stream`).
//! Delete this file together with `mod admin_client;` in main.rs.
