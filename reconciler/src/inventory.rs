//! The inventory: this install's objects in the cluster, reduced to what a
//! full resync compares (identity, the digest annotation, field ownership),
//! kept current by metadata-only watches on the managed-by selector
//! (kube-runtime's watcher, one per kind). A resync then compares in memory
//! instead of listing every object; without watches (the in-process stand-in,
//! a one-shot `issueops reconcile --resync`) it is filled by metadata LISTs.
//!
//! Memory is the point: an object's spec and data are never held. Field sets
//! are held only until a resync has checked them against the file at HEAD
//! ([`LiveObject::verified`]); an event that changes neither the digest nor
//! any ownership keeps that verdict, so a Job's status updates cost nothing.

use crate::desired;
use issueops_core::state_repo::Oid;
use issueops_core::{DIGEST_ANNOTATION, FIELD_MANAGER};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, ListParams};
use kube::core::{ApiResource, DynamicObject, PartialObjectMeta};
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

const PAGE: u32 = 500;

/// Field ownership of one object, from its `managedFields`.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Fields {
    /// Our apply's `fieldsV1` (JSON).
    pub ours: Option<Box<str>>,
    /// Other managers' `fieldsV1` outside subresources: (manager, JSON).
    pub others: Vec<(Box<str>, Box<str>)>,
}

/// Objects rendered from one template have the same field sets (names and
/// values are not in `fieldsV1`, only keys): 100,000 objects share a few
/// dozen. Each distinct set is held once.
fn intern(fields: Fields) -> Arc<Fields> {
    use std::sync::{Mutex, OnceLock, Weak};
    /// The shared sets by content hash, and the pool's size at its last sweep.
    type Pool = (HashMap<u64, Weak<Fields>>, usize);
    static POOL: OnceLock<Mutex<Pool>> = OnceLock::new();
    let mut h = std::collections::hash_map::DefaultHasher::new();
    (&fields.ours, &fields.others).hash(&mut h);
    let key = h.finish();
    let pool = POOL.get_or_init(Default::default);
    let mut pool = pool.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(shared) = pool.0.get(&key).and_then(Weak::upgrade) {
        if shared.ours == fields.ours && shared.others == fields.others {
            return shared;
        }
    }
    let shared = Arc::new(fields);
    pool.0.insert(key, Arc::downgrade(&shared));
    // Forget sets nobody holds any more, whenever the pool has doubled.
    if pool.0.len() > 2 * pool.1.max(64) {
        pool.0.retain(|_, w| w.strong_count() > 0);
        pool.1 = pool.0.len();
    }
    shared
}

/// One live managed object, as much as the resync needs.
#[derive(Debug, Clone)]
pub struct LiveObject {
    /// Position of its kind in [`desired::managed_resources`].
    pub rank: usize,
    /// The git blob id it was applied from (its digest annotation).
    pub digest: Option<Oid>,
    /// Being deleted: neither drift nor an orphan to delete again.
    pub deleting: bool,
    resource_version: u64,
    /// Who owns which fields, until verified (shared with a resync's snapshot).
    pub fields: Option<Arc<Fields>>,
    /// Changes whenever the digest or any ownership does.
    pub fingerprint: u64,
    /// A resync found every field of the file at `digest` owned by us.
    pub verified: bool,
}

impl LiveObject {
    fn from_meta(rank: usize, meta: &ObjectMeta) -> Self {
        let digest = meta
            .annotations
            .as_ref()
            .and_then(|a| a.get(DIGEST_ANNOTATION))
            .and_then(|d| Oid::from_str(d).ok());
        let mut ours = None;
        let mut others = Vec::new();
        for entry in meta.managed_fields.iter().flatten() {
            // Status and other subresources are never applied by us.
            if entry.subresource.as_deref().is_some_and(|s| !s.is_empty()) {
                continue;
            }
            let fields: Box<str> = entry
                .fields_v1
                .as_ref()
                .map(|f| f.0.to_string())
                .unwrap_or_default()
                .into();
            let manager = entry.manager.as_deref().unwrap_or_default();
            if manager == FIELD_MANAGER && entry.operation.as_deref() == Some("Apply") {
                ours = Some(fields);
            } else {
                others.push((manager.into(), fields));
            }
        }
        let deleting = meta.deletion_timestamp.is_some();
        let mut h = std::collections::hash_map::DefaultHasher::new();
        (
            digest.as_ref().map(|d| d.as_bytes()),
            deleting,
            &ours,
            &others,
        )
            .hash(&mut h);
        Self {
            rank,
            digest,
            deleting,
            resource_version: meta
                .resource_version
                .as_deref()
                .and_then(|v| v.parse().ok())
                .unwrap_or(0),
            fields: Some(intern(Fields { ours, others })),
            fingerprint: h.finish(),
            verified: false,
        }
    }

    /// Keeps `old`'s verdict, or one kept from before a restart
    /// (`remembered`), when nothing the verdict rests on changed.
    fn inherit(mut self, old: Option<&LiveObject>, remembered: Option<&u64>) -> Self {
        if old.is_some_and(|o| o.verified && o.fingerprint == self.fingerprint)
            || remembered == Some(&self.fingerprint)
        {
            self.verify();
        }
        self
    }

    fn verify(&mut self) {
        self.verified = true;
        self.fields = None;
    }
}

#[derive(Default)]
struct State {
    objects: HashMap<String, LiveObject>,
    /// Per kind: listed completely, and watched since (or just listed).
    synced: Vec<bool>,
    /// Per kind: the objects of a relist in progress.
    relist: Vec<Option<HashMap<String, LiveObject>>>,
    /// Verdicts kept from before a start (reference → fingerprint), until
    /// the first resync: the watches' first lists match objects against them.
    remembered: HashMap<String, u64>,
}

/// Verdicts reached since they were last kept, and objects gone since.
#[derive(Default)]
struct Unsaved {
    verdicts: Vec<(String, u64)>,
    gone: Vec<String>,
}

/// The shared inventory (cheap to clone).
#[derive(Clone)]
pub struct Inventory {
    state: Arc<RwLock<State>>,
    watching: Arc<AtomicBool>,
    changed: Arc<tokio::sync::Notify>,
    resources: Arc<Vec<(ApiResource, bool)>>,
    unsaved: Arc<std::sync::Mutex<Unsaved>>,
}

impl Default for Inventory {
    fn default() -> Self {
        let resources = desired::managed_resources();
        Self {
            state: Arc::new(RwLock::new(State {
                objects: HashMap::new(),
                synced: vec![false; resources.len()],
                relist: vec![None; resources.len()],
                remembered: HashMap::new(),
            })),
            watching: Arc::new(AtomicBool::new(false)),
            changed: Arc::new(tokio::sync::Notify::new()),
            resources: Arc::new(resources),
            unsaved: Default::default(),
        }
    }
}

/// The inventory's key for an object: its reference (`Kind/ns/name`).
fn key(resource: &(ApiResource, bool), meta: &ObjectMeta) -> Option<String> {
    let name = meta.name.as_deref()?;
    let namespace = if resource.1 {
        meta.namespace.as_deref()
    } else {
        None
    };
    Some(desired::reference_of(&resource.0.kind, namespace, name))
}

impl Inventory {
    fn write(&self) -> std::sync::RwLockWriteGuard<'_, State> {
        // A panic while holding the lock cannot leave an entry half-written
        // (every update replaces whole entries): the data is still good.
        self.state.write().unwrap_or_else(|e| e.into_inner())
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, State> {
        self.state.read().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether watches keep every kind current.
    pub fn is_watched(&self) -> bool {
        self.watching.load(Ordering::Relaxed) && self.read().synced.iter().all(|s| *s)
    }

    /// Records what the API server answered (an apply's response, a watch
    /// event); an answer older than what is held is ignored.
    pub fn record(&self, rank: usize, meta: &ObjectMeta) {
        let Some(resource) = self.resources.get(rank) else {
            return;
        };
        let Some(key) = key(resource, meta) else {
            return;
        };
        self.insert(key, LiveObject::from_meta(rank, meta));
    }

    /// Holds `live` as `key`, unless what is held is newer.
    fn insert(&self, key: String, live: LiveObject) {
        let mut state = self.write();
        let old = state.objects.get(&key);
        if old.is_some_and(|o| {
            o.resource_version > live.resource_version && live.resource_version > 0
        }) {
            return;
        }
        let live = live.inherit(old, state.remembered.get(&key));
        state.objects.insert(key, live);
        drop(state);
        self.changed.notify_waiters();
    }

    /// Records what a server-side apply of `desired` answered. The apply
    /// forced every field of the file to issueops, so the verdict a resync
    /// would reach is known now: checked here against the answer's field
    /// sets, it spares the resync reading the file back.
    pub fn record_applied(&self, desired: &desired::DesiredObject, meta: &ObjectMeta) {
        let Some(resource) = self.resources.get(desired.rank) else {
            return;
        };
        let Some(key) = key(resource, meta) else {
            return;
        };
        let mut live = LiveObject::from_meta(desired.rank, meta);
        if live.digest == Some(desired.digest)
            && !live.deleting
            && crate::ownership::unowned_by_us(desired, live.fields.as_deref(), 1).is_empty()
        {
            live.verify();
            self.unsaved()
                .verdicts
                .push((key.clone(), live.fingerprint));
        }
        self.insert(key, live);
    }

    fn unsaved(&self) -> std::sync::MutexGuard<'_, Unsaved> {
        self.unsaved.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Verdicts kept from before a start: the first lists match against them.
    pub fn remember(&self, verdicts: HashMap<String, u64>) {
        self.write().remembered = verdicts;
    }

    /// Drops what [`Inventory::remember`] kept (after the first resync, every
    /// listed object has been matched against it).
    pub fn forget_remembered(&self) {
        self.write().remembered = HashMap::new();
    }

    /// The verdicts reached and the objects gone since the last call: what
    /// to keep for the next start.
    pub fn take_unsaved(&self) -> (Vec<(String, u64)>, Vec<String>) {
        let unsaved = std::mem::take(&mut *self.unsaved());
        (unsaved.verdicts, unsaved.gone)
    }

    /// Forgets an object we deleted (a watch event may say so again).
    pub fn forget(&self, reference: &str) {
        if self.write().objects.remove(reference).is_some() {
            self.unsaved().gone.push(reference.to_string());
        }
        self.changed.notify_waiters();
    }

    /// Waits until the inventory holds `reference` at `resource_version` or
    /// newer (what a write answered); false after `timeout`.
    pub async fn wait_for(
        &self,
        reference: &str,
        resource_version: u64,
        timeout: Duration,
    ) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let changed = self.changed.notified();
            let seen = self
                .read()
                .objects
                .get(reference)
                .is_some_and(|o| o.resource_version >= resource_version);
            if seen {
                return true;
            }
            if tokio::time::timeout_at(deadline, changed).await.is_err() {
                return false;
            }
        }
    }

    /// Marks `reference` verified, if it is still the object that was
    /// checked (same `fingerprint`).
    pub fn mark_verified(&self, reference: &str, fingerprint: u64) {
        let verified = match self.write().objects.get_mut(reference) {
            Some(o) if o.fingerprint == fingerprint => {
                o.verify();
                true
            }
            _ => false,
        };
        if verified {
            self.unsaved()
                .verdicts
                .push((reference.to_string(), fingerprint));
        }
    }

    /// A copy of every object: the resync works on it without the lock.
    pub fn snapshot(&self) -> HashMap<String, LiveObject> {
        self.read().objects.clone()
    }

    /// Whether `reference` is held (and not being deleted).
    pub fn contains(&self, reference: &str) -> bool {
        self.read()
            .objects
            .get(reference)
            .is_some_and(|o| !o.deleting)
    }

    /// How many objects are held.
    pub fn len(&self) -> usize {
        self.read().objects.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Makes the inventory current for a resync: nothing to do while watches
    /// keep it; otherwise (or while the watches' first lists are not done
    /// after `wait`) one metadata LIST per kind and page. Returns the LISTs.
    pub async fn refresh(
        &self,
        client: &kube::Client,
        instance: &str,
        wait: Duration,
    ) -> Result<usize, kube::Error> {
        if self.watching.load(Ordering::Relaxed) {
            let deadline = tokio::time::Instant::now() + wait;
            loop {
                let changed = self.changed.notified();
                if self.is_watched() {
                    return Ok(0);
                }
                if tokio::time::timeout_at(deadline, changed).await.is_err() {
                    break;
                }
            }
            tracing::warn!("inventory watches not in sync yet; listing instead");
        }
        let selector = issueops_core::managed_selector(instance);
        let mut calls = 0;
        let mut listed: Vec<HashMap<String, LiveObject>> = Vec::new();
        for (rank, resource) in self.resources.iter().enumerate() {
            let api: Api<DynamicObject> = Api::all_with(client.clone(), &resource.0);
            let mut params = ListParams::default().labels(&selector).limit(PAGE);
            let mut objects = HashMap::new();
            loop {
                let page = crate::apply::with_backoff("list managed objects", || {
                    api.list_metadata(&params)
                })
                .await?;
                calls += 1;
                for item in &page.items {
                    if let Some(key) = key(resource, &item.metadata) {
                        objects.insert(key, LiveObject::from_meta(rank, &item.metadata));
                    }
                }
                match page.metadata.continue_.filter(|c| !c.is_empty()) {
                    Some(token) => params = params.continue_token(&token),
                    None => break,
                }
            }
            listed.push(objects);
        }
        let mut state = self.write();
        let old = std::mem::take(&mut state.objects);
        for (rank, objects) in listed.into_iter().enumerate() {
            for (key, live) in objects {
                let live = live.inherit(old.get(&key), state.remembered.get(&key));
                state.objects.insert(key, live);
            }
            state.synced[rank] = true;
        }
        Ok(calls)
    }

    /// Keeps the inventory current with one metadata watch per kind while
    /// the returned future runs (the watcher lists first, then watches, and
    /// relists with backoff after errors). From this call until the future
    /// is dropped, resyncs wait for the watches instead of listing.
    pub fn watch(
        &self,
        client: kube::Client,
        instance: String,
    ) -> impl std::future::Future<Output = ()> + Send + 'static {
        struct Stopped(Inventory);
        impl Drop for Stopped {
            fn drop(&mut self) {
                self.0.watching.store(false, Ordering::Relaxed);
                let mut state = self.0.write();
                state.synced.iter_mut().for_each(|s| *s = false);
            }
        }
        self.watching.store(true, Ordering::Relaxed);
        let stopped = Stopped(self.clone());
        let this = self.clone();
        async move {
            let _stopped = stopped;
            this.run_watches(client, instance).await
        }
    }

    async fn run_watches(&self, client: kube::Client, instance: String) {
        use futures::StreamExt;
        use kube::runtime::watcher::{self, Event};
        use kube::runtime::WatchStreamExt;
        let selector = issueops_core::managed_selector(&instance);
        let watches = self.resources.iter().enumerate().map(|(rank, resource)| {
            // Metadata only: the server sends no spec, data or status.
            let api: Api<PartialObjectMeta<DynamicObject>> =
                Api::all_with(client.clone(), &resource.0);
            let config = watcher::Config::default().labels(&selector);
            let this = self.clone();
            async move {
                let stream = watcher::watcher(api, config).default_backoff();
                let mut stream = std::pin::pin!(stream);
                while let Some(event) = stream.next().await {
                    match event {
                        Ok(Event::Apply(o)) => this.record(rank, &o.metadata),
                        Ok(Event::Delete(o)) => {
                            if let Some(key) = key(&this.resources[rank], &o.metadata) {
                                this.forget(&key);
                            }
                        }
                        Ok(Event::Init) => {
                            let mut state = this.write();
                            state.relist[rank] = Some(HashMap::new());
                        }
                        Ok(Event::InitApply(o)) => {
                            if let Some(key) = key(&this.resources[rank], &o.metadata) {
                                let live = LiveObject::from_meta(rank, &o.metadata);
                                let mut state = this.write();
                                if let Some(buffer) = state.relist[rank].as_mut() {
                                    buffer.insert(key, live);
                                }
                            }
                        }
                        Ok(Event::InitDone) => {
                            {
                                let mut state = this.write();
                                let listed = state.relist[rank].take().unwrap_or_default();
                                let (previous, mut kept): (HashMap<_, _>, HashMap<_, _>) =
                                    std::mem::take(&mut state.objects)
                                        .into_iter()
                                        .partition(|(_, live)| live.rank == rank);
                                for (key, live) in listed {
                                    // The verdicts of the previous list carry over.
                                    let live = live.inherit(
                                        previous.get(&key),
                                        state.remembered.get(&key),
                                    );
                                    kept.insert(key, live);
                                }
                                state.objects = kept;
                                state.synced[rank] = true;
                            }
                            this.changed.notify_waiters();
                        }
                        Err(e) => {
                            tracing::warn!(kind = %this.resources[rank].0.kind, error = %e, "inventory watch interrupted; the watcher relists")
                        }
                    }
                }
            }
        });
        futures::future::join_all(watches).await;
    }
}
