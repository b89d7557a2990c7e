//! SQLite implementation of [`crate::Store`] (being written).

/// The embedded store.
#[derive(Debug)]
pub struct SqliteStore;
// Placeholder until the implementation lands.
impl SqliteStore {
    /// Opens the store (placeholder).
    pub fn open(_p: &std::path::Path) -> crate::Result<SqliteStore> {
        Err(crate::StoreError::Open {
            path: String::new(),
            detail: "not implemented".into(),
        })
    }
}
impl crate::Store for SqliteStore {
    fn insert_tenant(&self, _: &crate::Tenant) -> crate::Result<()> {
        unimplemented!()
    }
    fn get_tenant(&self, _: &str) -> crate::Result<Option<crate::Tenant>> {
        unimplemented!()
    }
    fn list_tenants(&self) -> crate::Result<Vec<crate::Tenant>> {
        unimplemented!()
    }
    fn insert_key(&self, _: &crate::ApiKey) -> crate::Result<()> {
        unimplemented!()
    }
    fn key_by_hash(&self, _: &str) -> crate::Result<Option<crate::ApiKey>> {
        unimplemented!()
    }
    fn get_key(&self, _: &str) -> crate::Result<Option<crate::ApiKey>> {
        unimplemented!()
    }
    fn list_keys(&self, _: Option<&str>) -> crate::Result<Vec<crate::ApiKey>> {
        unimplemented!()
    }
    fn revoke_key(&self, _: &str, _: crate::Millis) -> crate::Result<bool> {
        unimplemented!()
    }
    fn count_keys(&self) -> crate::Result<u64> {
        unimplemented!()
    }
    fn insert_sandbox(&self, _: &crate::SandboxRecord) -> crate::Result<()> {
        unimplemented!()
    }
    fn update_sandbox(&self, _: &crate::SandboxRecord) -> crate::Result<bool> {
        unimplemented!()
    }
    fn get_sandbox(&self, _: &str) -> crate::Result<Option<crate::SandboxRecord>> {
        unimplemented!()
    }
    fn list_sandboxes(&self, _: &crate::SandboxFilter) -> crate::Result<Vec<crate::SandboxRecord>> {
        unimplemented!()
    }
    fn count_active_by_key(&self, _: &str) -> crate::Result<u64> {
        unimplemented!()
    }
    fn insert_event(&self, _: &crate::Event) -> crate::Result<crate::Event> {
        unimplemented!()
    }
    fn list_events(&self, _: &crate::EventFilter) -> crate::Result<Vec<crate::Event>> {
        unimplemented!()
    }
    fn insert_audit(&self, _: &crate::AuditEntry) -> crate::Result<i64> {
        unimplemented!()
    }
    fn list_audit(&self, _: &crate::AuditFilter) -> crate::Result<Vec<crate::AuditEntry>> {
        unimplemented!()
    }
    fn insert_exec(&self, _: &crate::ExecRecord) -> crate::Result<i64> {
        unimplemented!()
    }
    fn update_exec(&self, _: &crate::ExecRecord) -> crate::Result<()> {
        unimplemented!()
    }
    fn list_execs(&self, _: &str, _: u32) -> crate::Result<Vec<crate::ExecRecord>> {
        unimplemented!()
    }
}
