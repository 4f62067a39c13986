//! Tables in object stores (`s3://bucket/prefix/`): a table is one object
//! or every object under a prefix, its format read off the objects'
//! extensions, as for local folders.

use std::path::Path;
use std::sync::Arc;

use datafusion::datasource::listing::ListingTableUrl;
use datafusion::execution::object_store::ObjectStoreRegistry;
use datafusion::prelude::SessionContext;
use futures::TryStreamExt;
use object_store::path::Path as StorePath;
use object_store::{ObjectStore, ObjectStoreExt};

use crate::error::{EngineError, Result};
use crate::session::{register_location, FileFormat};

/// Registers `url` (an object, or a prefix of objects of one format) as
/// table `name`.
pub async fn register_url_table(ctx: &SessionContext, name: &str, url: &str) -> Result<()> {
    let failed = |reason: String| EngineError::InputPath {
        what: "table URL",
        path: url.into(),
        reason,
    };
    let (format, extension) = match FileFormat::from_path(Path::new(url)) {
        Some(format) => (format, extension_of(url)),
        None => {
            let registry = Arc::clone(&ctx.runtime_env().object_store_registry);
            let (store, prefix) = store_of(registry.as_ref(), url)?;
            let objects = list_names(store.as_ref(), &prefix).await.map_err(failed)?;
            folder_format(&objects).map_err(failed)?
        }
    };
    register_location(ctx, name, url, format, &extension)
        .await
        .map_err(|error| failed(error.strip_backtrace()))
}

/// Registers each child of the prefix `url` (an object of a known format,
/// or a prefix holding some) as a table named after it.
pub async fn register_data_url(ctx: &SessionContext, url: &str) -> Result<Vec<String>> {
    let registry = Arc::clone(&ctx.runtime_env().object_store_registry);
    let mut names = Vec::new();
    for (name, location) in tables_under(registry.as_ref(), url).await? {
        register_url_table(ctx, &name, &location).await?;
        names.push(name);
    }
    Ok(names)
}

/// The tables under the prefix `url`, as (name, URL): each child prefix,
/// and each object of a known format, hidden ones (`_`, `.`) left out.
pub async fn tables_under(
    registry: &dyn ObjectStoreRegistry,
    url: &str,
) -> Result<Vec<(String, String)>> {
    let failed = |reason: String| EngineError::InputPath {
        what: "data URL",
        path: url.into(),
        reason,
    };
    let (store, prefix) = store_of(registry, url)?;
    let listing = store
        .list_with_delimiter(Some(&prefix))
        .await
        .map_err(|error| failed(error.to_string()))?;
    let base = url.trim_end_matches('/');
    let prefixes = listing.common_prefixes.iter().filter_map(|child| {
        let name = child.filename()?;
        Some((name.to_string(), format!("{base}/{name}/")))
    });
    let objects = listing.objects.iter().filter_map(|object| {
        let name = object.location.filename()?;
        FileFormat::from_path(Path::new(name))?;
        Some((name.to_string(), format!("{base}/{name}")))
    });
    let mut children: Vec<(String, String)> = prefixes
        .chain(objects)
        .filter(|(name, _)| !is_hidden(name))
        .map(|(child, location)| (crate::session::table_name(Path::new(&child)), location))
        .collect();
    if children.is_empty() {
        return Err(failed(
            "it holds no tables (no data objects or prefixes under it)".into(),
        ));
    }
    children.sort();
    Ok(children)
}

/// `url` as DataFusion reads it: an object as it is, a prefix with objects
/// under it ending in `/`. Anything else fails naming `url` (DataFusion
/// would only say that it found no files, or that the name lacks the
/// extension).
pub async fn object_input(ctx: &SessionContext, what: &'static str, url: &str) -> Result<String> {
    let failed = |reason: String| EngineError::InputPath {
        what,
        path: url.into(),
        reason,
    };
    let registry = Arc::clone(&ctx.runtime_env().object_store_registry);
    let (store, prefix) = store_of(registry.as_ref(), url)?;
    if !url.ends_with('/') {
        match store.head(&prefix).await {
            Ok(_) => return Ok(url.to_string()),
            Err(object_store::Error::NotFound { .. }) => {}
            Err(error) => return Err(failed(error.to_string())),
        }
    }
    if list_names(store.as_ref(), &prefix)
        .await
        .map_err(failed)?
        .is_empty()
    {
        return Err(failed("no such object, and no objects under it".into()));
    }
    Ok(format!("{}/", url.trim_end_matches('/')))
}

/// The store `url` is in and its path there, as a prefix ending in `/`.
fn store_of(
    registry: &dyn ObjectStoreRegistry,
    url: &str,
) -> Result<(Arc<dyn ObjectStore>, StorePath)> {
    let folder = format!("{}/", url.trim_end_matches('/'));
    let parsed = ListingTableUrl::parse(&folder).map_err(|error| EngineError::InputPath {
        what: "table URL",
        path: url.into(),
        reason: error.strip_backtrace(),
    })?;
    let store = registry
        .get_store(parsed.object_store().as_ref())
        .map_err(|error| EngineError::InputPath {
            what: "table URL",
            path: url.into(),
            reason: error.strip_backtrace(),
        })?;
    Ok((store, parsed.prefix().clone()))
}

/// The names of the objects under `prefix`, hidden ones left out.
async fn list_names(
    store: &dyn ObjectStore,
    prefix: &StorePath,
) -> std::result::Result<Vec<String>, String> {
    let objects: Vec<_> = store
        .list(Some(prefix))
        .try_collect()
        .await
        .map_err(|error| error.to_string())?;
    Ok(objects
        .iter()
        .filter_map(|object| object.location.filename().map(str::to_string))
        .filter(|name| !is_hidden(name))
        .collect())
}

/// The one format of a folder's objects, and the extension to read.
fn folder_format(names: &[String]) -> std::result::Result<(FileFormat, String), String> {
    let mut formats = names
        .iter()
        .filter_map(|name| Some((FileFormat::from_path(Path::new(name))?, extension_of(name))));
    let (first, extension) = formats
        .next()
        .ok_or_else(|| "it holds no .parquet, .csv or .json objects".to_string())?;
    if let Some((other, _)) = formats.find(|(format, _)| *format != first) {
        return Err(format!(
            "it mixes {first:?} and {other:?} objects; one format per table"
        ));
    }
    Ok((first, extension))
}

fn extension_of(name: &str) -> String {
    Path::new(name)
        .extension()
        .and_then(|extension| extension.to_str())
        .map(|extension| format!(".{extension}"))
        .unwrap_or_default()
}

fn is_hidden(name: &str) -> bool {
    name.starts_with('.') || name.starts_with('_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_folder_has_one_format() {
        let names = |list: &[&str]| list.iter().map(|name| name.to_string()).collect::<Vec<_>>();
        assert_eq!(
            folder_format(&names(&["part-0.csv", "part-1.csv"])).expect("csv"),
            (FileFormat::Csv, ".csv".to_string())
        );
        let mixed = folder_format(&names(&["a.csv", "b.parquet"])).expect_err("mixed");
        assert!(mixed.contains("mixes"), "{mixed}");
        assert!(folder_format(&names(&["README"])).is_err());
    }
}
