//! The registry in memory, answering as `registry-contract.md` records and the stand-in does:
//! a registration never overwrites (409, a conflict, for any taken path, listed or not),
//! servers are created disabled, an update keeps the enabled state (and an agent's status),
//! removal is idempotent, lists hide what the caller may not see (here: paths marked hidden)
//! and carry no `mcp_endpoint`. It counts its calls by operation.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Mutex, MutexGuard, PoisonError};

use registrar_core::desired::{Collection, DesiredEntry, EntryBody, Pointing};
use registrar_core::plan::CurrentEntry;
use registrar_core::ports::Registry;
use registrar_core::{ErrorClass, PortError};

#[derive(Debug, Default)]
struct Entries {
    entries: BTreeMap<(Collection, String), CurrentEntry>,
    credentials: BTreeMap<String, Option<String>>,
    hidden: BTreeSet<String>,
    writes: u64,
    calls: BTreeMap<&'static str, u64>,
}

impl Entries {
    /// Counts one call of `op` (whatever it answers).
    fn call(&mut self, op: &'static str) {
        *self.calls.entry(op).or_default() += 1;
    }
}

/// The registry in memory, as one user (`registered_by` of what it registers).
#[derive(Debug)]
pub struct MemoryRegistry {
    user: String,
    inner: Mutex<Entries>,
}

fn not_found(op: &str, path: &str) -> PortError {
    PortError::new(
        "registry",
        op,
        ErrorClass::Terminal,
        format!("HTTP 404: nothing at {path}"),
    )
}

impl MemoryRegistry {
    /// An empty registry whose caller is `user`.
    pub fn new(user: &str) -> Self {
        Self {
            user: user.to_owned(),
            inner: Mutex::default(),
        }
    }

    fn inner(&self) -> MutexGuard<'_, Entries> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Puts an entry there as someone else would (another publisher, an operator).
    pub fn seed(&self, entry: CurrentEntry) {
        self.inner()
            .entries
            .insert((entry.collection, entry.path.clone()), entry);
    }

    /// Lists stop showing `path` (drafts, private entries of others).
    pub fn hide(&self, path: &str) {
        self.inner().hidden.insert(path.to_owned());
    }

    /// The bearer credential last set on a server (`None`: none or cleared).
    pub fn credential(&self, path: &str) -> Option<String> {
        self.inner().credentials.get(path).cloned().flatten()
    }

    /// Writes so far (register, update, toggle, remove, credential).
    pub fn writes(&self) -> u64 {
        self.inner().writes
    }

    /// Calls so far by operation (`list`, `get`, `register`, `update`, `toggle`, `remove`,
    /// `credential`), each counted whatever it answered: a registration refused with 409 is a
    /// `register` call, not a write.
    pub fn calls(&self) -> BTreeMap<&'static str, u64> {
        self.inner().calls.clone()
    }

    /// Forgets the calls counted so far (a test's set-up is not what it measures).
    pub fn clear_calls(&self) {
        self.inner().calls.clear();
    }

    fn entry_of(&self, d: &DesiredEntry, enabled: bool, status: Option<String>) -> CurrentEntry {
        let mut e = CurrentEntry::written(d, enabled, status);
        e.registered_by = match d.collection() {
            Collection::Server => Some(self.user.clone()),
            Collection::Agent => None,
        };
        if let EntryBody::Server(s) = &d.body {
            e.mcp_endpoint = Some(s.mcp_endpoint.clone()).filter(|m| !m.is_empty());
        }
        e
    }
}

impl Registry for MemoryRegistry {
    async fn list(&self, collection: Collection) -> Result<Vec<CurrentEntry>, PortError> {
        let mut inner = self.inner();
        inner.call("list");
        Ok(inner
            .entries
            .iter()
            .filter(|((c, path), _)| *c == collection && !inner.hidden.contains(path))
            .map(|(_, e)| CurrentEntry {
                mcp_endpoint: None,
                ..e.clone()
            })
            .collect())
    }

    async fn get(
        &self,
        collection: Collection,
        path: &str,
    ) -> Result<Option<CurrentEntry>, PortError> {
        let mut inner = self.inner();
        inner.call("get");
        Ok(inner.entries.get(&(collection, path.to_owned())).cloned())
    }

    async fn register(&self, d: &DesiredEntry) -> Result<(), PortError> {
        let entry = self.entry_of(d, false, None);
        let mut inner = self.inner();
        inner.call("register");
        let key = (d.collection(), d.path.clone());
        // Any entry at the path, seen in lists or not (a draft, another caller's private entry).
        if inner.entries.contains_key(&key) {
            return Err(PortError::new(
                "registry",
                "register",
                ErrorClass::Conflict,
                format!("HTTP 409: a service with path '{}' already exists", d.path),
            ));
        }
        inner.entries.insert(key, entry);
        inner.writes += 1;
        Ok(())
    }

    async fn update(&self, d: &DesiredEntry, current: &CurrentEntry) -> Result<(), PortError> {
        let mut inner = self.inner();
        inner.call("update");
        let key = (d.collection(), d.path.clone());
        let enabled = inner.entries.get(&key).is_some_and(|e| e.enabled);
        let entry = self.entry_of(d, enabled, current.status.clone());
        inner.entries.insert(key, entry);
        inner.writes += 1;
        Ok(())
    }

    async fn set_enabled(
        &self,
        collection: Collection,
        path: &str,
        enabled: bool,
    ) -> Result<(), PortError> {
        let mut inner = self.inner();
        inner.call("toggle");
        let entry = inner
            .entries
            .get_mut(&(collection, path.to_owned()))
            .ok_or_else(|| not_found("toggle", path))?;
        entry.enabled = enabled;
        inner.writes += 1;
        Ok(())
    }

    async fn remove(&self, collection: Collection, path: &str) -> Result<(), PortError> {
        let mut inner = self.inner();
        inner.call("remove");
        inner.entries.remove(&(collection, path.to_owned()));
        inner.credentials.remove(path);
        inner.writes += 1;
        Ok(())
    }

    async fn set_credential(&self, path: &str, bearer: Option<&str>) -> Result<(), PortError> {
        let mut inner = self.inner();
        inner.call("credential");
        let entry = inner
            .entries
            .get_mut(&(Collection::Server, path.to_owned()))
            .ok_or_else(|| not_found("set auth credential", path))?;
        let url = entry
            .pointing
            .as_ref()
            .map(|p| p.url.clone())
            .unwrap_or_default();
        let scheme = if bearer.is_some() { "bearer" } else { "none" };
        entry.pointing = Some(Pointing::new(&url, Some(scheme)));
        inner
            .credentials
            .insert(path.to_owned(), bearer.map(str::to_owned));
        inner.writes += 1;
        Ok(())
    }
}
