//! Keys and rate limits, below the state: [`keys`] is keys themselves (their form, hashing,
//! minting, the server's secret and [`Caller`]), [`limit`] the token buckets. Reading a key
//! from a request is the HTTP edge's (`paddock-server`'s `auth`).

pub mod keys;
pub mod limit;

pub use self::keys::{
    Caller, E2B_KEY_PREFIX, e2b_form, generate_key, hash_key, looks_like_key, new_key_in,
    random_id, server_secret,
};
pub use self::limit::RateLimiter;
