//! The driver's side of a write: before the job, the output location must
//! hold nothing (tone neither overwrites nor appends, as Spark's default);
//! after the job committed, `_SUCCESS` says so, for local folders and
//! object stores alike.

use std::path::Path;
use std::sync::Arc;

use datafusion::datasource::listing::ListingTableUrl;
use datafusion::execution::object_store::ObjectStoreRegistry;
use futures::StreamExt;
use object_store::{ObjectStore, ObjectStoreExt};

use super::{remove_uncommitted, store::location_of};

/// An output location that cannot be written, or holds something already.
#[derive(Debug, Clone, thiserror::Error)]
#[error("cannot write '{location}': {reason}")]
pub struct OutputError {
    pub location: String,
    pub reason: String,
}

type Result<T> = std::result::Result<T, OutputError>;

/// The marker a committed output holds; readers skip it (`_` names).
pub const SUCCESS_MARKER: &str = "_SUCCESS";

/// Refuses an output location that holds anything, and creates a local
/// folder. `stores` reaches object-store locations.
pub async fn prepare_output(stores: &dyn ObjectStoreRegistry, dir: &Path) -> Result<()> {
    let Some(folder) = location_of(dir) else {
        if std::fs::read_dir(dir).is_ok_and(|mut entries| entries.next().is_some()) {
            return Err(not_empty(&dir.display().to_string()));
        }
        return std::fs::create_dir_all(dir).map_err(|error| output_error(&dir.display(), error));
    };
    let (store, prefix) = store_for(stores, &folder)?;
    let first = store.list(Some(&prefix)).next().await;
    match first {
        None => Ok(()),
        Some(Ok(_)) => Err(not_empty(&folder)),
        Some(Err(error)) => Err(output_error(&folder, error)),
    }
}

/// After the job: removes what uncommitted local attempts left and writes
/// the `_SUCCESS` marker.
pub async fn commit_output(stores: &dyn ObjectStoreRegistry, dir: &Path) -> Result<()> {
    let Some(folder) = location_of(dir) else {
        remove_uncommitted(dir).map_err(|error| output_error(&dir.display(), error))?;
        let marker = dir.join(SUCCESS_MARKER);
        return std::fs::write(&marker, b"")
            .map_err(|error| output_error(&marker.display(), error));
    };
    let (store, prefix) = store_for(stores, &folder)?;
    store
        .put(
            &prefix.clone().join(SUCCESS_MARKER),
            Vec::<u8>::new().into(),
        )
        .await
        .map(|_| ())
        .map_err(|error| output_error(&format!("{folder}{SUCCESS_MARKER}"), error))
}

fn store_for(
    stores: &dyn ObjectStoreRegistry,
    folder: &str,
) -> Result<(Arc<dyn ObjectStore>, object_store::path::Path)> {
    let url = ListingTableUrl::parse(folder).map_err(|error| output_error(&folder, error))?;
    let store = stores
        .get_store(url.object_store().as_ref())
        .map_err(|error| output_error(&folder, error))?;
    Ok((store, url.prefix().clone()))
}

fn not_empty(location: &str) -> OutputError {
    output_error(
        &location,
        "it is not empty; tone neither overwrites nor appends: remove it or write to a new location",
    )
}

fn output_error(location: &dyn std::fmt::Display, reason: impl std::fmt::Display) -> OutputError {
    OutputError {
        location: location.to_string(),
        reason: reason.to_string(),
    }
}
