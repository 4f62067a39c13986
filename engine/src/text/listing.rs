//! The files a text input names: a local file or folder, or an object or
//! prefix in an object store (`s3://bucket/key`, `s3://bucket/prefix/`).
//! Folders and prefixes are read whole, in name order, without hidden
//! entries (names starting with `.` or `_`, such as `_SUCCESS`).

use std::path::{Path, PathBuf};

use datafusion::datasource::listing::ListingTableUrl;
use datafusion::execution::runtime_env::RuntimeEnv;
use futures::TryStreamExt;
use object_store::{ObjectStore, ObjectStoreExt};

use crate::error::{EngineError, Result};
use crate::stores::{local_path, object_url};

/// One file to read: where it is and how many bytes it has.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TextFile {
    /// An absolute local path or an object URL.
    pub location: String,
    pub size: u64,
}

/// The store-facing form of `location`. Local paths become `file://`
/// URLs as they are, without the glob expansion `ListingTableUrl::parse`
/// would apply to them.
pub(super) fn url_of(location: &str) -> Result<ListingTableUrl> {
    let url = if object_url(location).is_some() {
        url::Url::parse(location).map_err(|error| input_error(location, error))?
    } else {
        url::Url::from_file_path(local_path(location))
            .map_err(|()| input_error(location, "not an absolute path"))?
    };
    ListingTableUrl::try_new(url, None).map_err(|error| input_error(location, error))
}

pub(super) fn input_error(location: &str, reason: impl std::fmt::Display) -> EngineError {
    EngineError::InputPath {
        what: "text input",
        path: PathBuf::from(location),
        reason: reason.to_string(),
    }
}

/// Every file `inputs` name, in order.
pub async fn list_text_files(runtime: &RuntimeEnv, inputs: &[String]) -> Result<Vec<TextFile>> {
    let mut files = Vec::new();
    for input in inputs {
        if object_url(input).is_some() {
            files.extend(list_objects(runtime, input).await?);
        } else {
            let path = std::path::absolute(local_path(input))
                .map_err(|error| input_error(input, error))?;
            let listed = tokio::task::spawn_blocking(move || {
                let mut files = Vec::new();
                list_local(&path, &mut files).map(|()| files)
            })
            .await
            .map_err(|error| EngineError::internal(format!("listing text files: {error}")))?;
            files.extend(listed?);
        }
    }
    Ok(files)
}

async fn list_objects(runtime: &RuntimeEnv, input: &str) -> Result<Vec<TextFile>> {
    let url = url_of(input)?;
    let store = runtime
        .object_store(&url)
        .map_err(|error| input_error(input, error))?;
    if !url.is_collection() {
        match store.head(url.prefix()).await {
            Ok(meta) => {
                return Ok(vec![TextFile {
                    location: input.to_string(),
                    size: meta.size,
                }])
            }
            Err(object_store::Error::NotFound { .. }) => {}
            Err(error) => return Err(input_error(input, error)),
        }
    }
    let prefix = url.prefix().clone();
    let mut objects: Vec<object_store::ObjectMeta> = store
        .list(Some(&prefix))
        .try_collect()
        .await
        .map_err(|error| input_error(input, error))?;
    objects.retain(|object| {
        object
            .location
            .prefix_match(&prefix)
            .is_some_and(|mut parts| parts.all(|part| !is_hidden(part.as_ref())))
    });
    objects.sort_by(|a, b| a.location.cmp(&b.location));
    if objects.is_empty() {
        return Err(input_error(
            input,
            "no such object, and no objects under it",
        ));
    }
    let base = url.object_store();
    Ok(objects
        .into_iter()
        .map(|object| TextFile {
            location: format!("{}{}", base.as_str(), object.location),
            size: object.size,
        })
        .collect())
}

fn is_hidden(name: &str) -> bool {
    name.starts_with('.') || name.starts_with('_')
}

fn list_local(path: &Path, files: &mut Vec<TextFile>) -> Result<()> {
    let local_error = |error: std::io::Error| input_error(&path.to_string_lossy(), error);
    let metadata = std::fs::metadata(path).map_err(local_error)?;
    if metadata.is_file() {
        let location = path
            .to_str()
            .ok_or_else(|| input_error(&path.to_string_lossy(), "the path is not UTF-8"))?;
        files.push(TextFile {
            location: location.to_string(),
            size: metadata.len(),
        });
        return Ok(());
    }
    let mut children: Vec<PathBuf> = std::fs::read_dir(path)
        .map_err(local_error)?
        .filter_map(|entry| entry.ok().map(|entry| entry.path()))
        .filter(|child| {
            let name = child.file_name().and_then(|name| name.to_str());
            !name.is_some_and(is_hidden)
        })
        .collect();
    children.sort();
    for child in children {
        list_local(&child, files)?;
    }
    Ok(())
}
