//! Path roots (`--allow-path`): with any root given, every location a job
//! reads, writes or works in must lie under one of them. Local paths are
//! compared after resolving `..` and symlinks (the longest part that exists
//! is canonicalized, the rest normalized), so neither `/data/../etc` nor a
//! symlink out of a root gets through; object-store URLs are compared by
//! scheme, bucket and key prefix. Checks run before any data is read or
//! written.

use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use datafusion::datasource::physical_plan::FileScanConfig;
use datafusion::datasource::sink::DataSinkExec;
use datafusion::datasource::source::DataSourceExec;
use datafusion::logical_expr::{DdlStatement, LogicalPlan};
use datafusion::physical_plan::ExecutionPlan;

use crate::error::{EngineError, Result};
use crate::sink::FileSinkExec;
use crate::text::TextSourceExec;

/// Where jobs may read and write; empty: anywhere.
#[derive(Debug, Clone, Default)]
pub struct PathRoots {
    local: Vec<PathBuf>,
    /// `scheme://bucket/prefix/`, ending in `/`.
    urls: Vec<String>,
    /// The roots as the user gave them, for messages.
    given: Vec<String>,
}

impl PathRoots {
    /// Roots from `--allow-path` values: local folders (which must exist)
    /// or object-store URL prefixes (`s3://bucket/prefix`).
    pub fn new(prefixes: &[String]) -> Result<Self> {
        let mut roots = Self::default();
        for prefix in prefixes {
            if let Some((scheme, rest)) = prefix.split_once("://") {
                if scheme != "file" {
                    roots.urls.push(url_root(scheme, rest, prefix)?);
                    roots.given.push(prefix.clone());
                    continue;
                }
            }
            let path = local_part(prefix);
            let canonical =
                std::fs::canonicalize(&path).map_err(|error| EngineError::InputPath {
                    what: "--allow-path root",
                    path: path.clone(),
                    reason: error.to_string(),
                })?;
            roots.local.push(canonical);
            roots.given.push(prefix.clone());
        }
        Ok(roots)
    }

    /// The roots as they were given (to pass them on).
    pub fn given(&self) -> &[String] {
        &self.given
    }

    /// True when no root is set: every location is allowed.
    pub fn is_open(&self) -> bool {
        self.given.is_empty()
    }

    /// Checks one location (a path or a URL) that `what` names.
    pub fn check(&self, what: &str, location: &str) -> Result<()> {
        if self.is_open() {
            return Ok(());
        }
        let allowed = match location.split_once("://") {
            Some((scheme, rest)) if scheme != "file" => self.url_allowed(scheme, rest),
            _ => self.local_allowed(&local_part(location)),
        };
        if allowed {
            Ok(())
        } else {
            Err(EngineError::PathNotAllowed {
                what: what.to_string(),
                path: location.to_string(),
                roots: self.given.join(", "),
            })
        }
    }

    fn local_allowed(&self, path: &Path) -> bool {
        let Some(resolved) = resolve(path) else {
            return false;
        };
        self.local.iter().any(|root| resolved.starts_with(root))
    }

    fn url_allowed(&self, scheme: &str, rest: &str) -> bool {
        // Object stores do not resolve `..`; a key holding it is refused
        // rather than guessed at.
        if rest.split('/').any(|segment| segment == "..") {
            return false;
        }
        let location = format!("{scheme}://{rest}");
        self.urls.iter().any(|root| {
            location.starts_with(root.as_str()) || location == root.trim_end_matches('/')
        })
    }

    /// Checks the locations a DDL statement would touch before it runs
    /// (`CREATE EXTERNAL TABLE` lists and reads files when it is created).
    pub fn check_logical(&self, plan: &LogicalPlan) -> Result<()> {
        if self.is_open() {
            return Ok(());
        }
        match plan {
            LogicalPlan::Ddl(DdlStatement::CreateExternalTable(create)) => create
                .locations
                .iter()
                .try_for_each(|location| self.check("table location", location)),
            LogicalPlan::Copy(copy) => self.check("COPY target", &copy.output_url),
            _ => Ok(()),
        }
    }

    /// Checks every location `plan` reads or writes: file scans, text
    /// sources, tone's file sinks and DataFusion's (COPY). A sink tone
    /// cannot see into is refused while roots are set.
    pub fn check_plan(&self, plan: &Arc<dyn ExecutionPlan>) -> Result<()> {
        if self.is_open() {
            return Ok(());
        }
        let any = plan.as_ref() as &dyn std::any::Any;
        if let Some(source) = any.downcast_ref::<DataSourceExec>() {
            let data = source.data_source().as_ref() as &dyn std::any::Any;
            if let Some(scan) = data.downcast_ref::<FileScanConfig>() {
                let base = scan.object_store_url.as_str().trim_end_matches('/');
                for file in scan.file_groups.iter().flat_map(|group| group.files()) {
                    let location = format!("{base}/{}", file.object_meta.location);
                    self.check("scanned file", &location)?;
                }
            }
        } else if let Some(text) = any.downcast_ref::<TextSourceExec>() {
            for range in text.ranges().iter().flatten() {
                self.check("text file", &range.location)?;
            }
        } else if let Some(sink) = any.downcast_ref::<FileSinkExec>() {
            self.check("write target", &sink.dir().to_string_lossy())?;
        } else if let Some(sink) = any.downcast_ref::<DataSinkExec>() {
            let Some(config) = crate::sink::file_sink_config(sink) else {
                return Err(EngineError::PathNotAllowed {
                    what: "a data sink of unknown kind".into(),
                    path: format!("{sink:?}"),
                    roots: self.given.join(", "),
                });
            };
            // Not carried by datafusion-proto: empty in a decoded plan.
            if !config.original_url.is_empty() {
                self.check("COPY target", &config.original_url)?;
            }
            for url in &config.table_paths {
                self.check("COPY target", url.as_str())?;
            }
        }
        plan.children()
            .into_iter()
            .try_for_each(|child| self.check_plan(child))
    }
}

/// `scheme://bucket/prefix` as a root ending in `/`.
fn url_root(scheme: &str, rest: &str, given: &str) -> Result<String> {
    let bucket = rest.split('/').next().unwrap_or_default();
    if bucket.is_empty() || rest.split('/').any(|segment| segment == "..") {
        return Err(EngineError::Plan {
            message: format!(
                "--allow-path '{given}' needs a bucket (e.g. s3://bucket/prefix) and no '..'"
            ),
        });
    }
    Ok(format!("{scheme}://{}/", rest.trim_end_matches('/')))
}

/// The path of a local location: `file://` stripped, globs cut off (the
/// part before the first wildcard is what a listing starts from), made
/// absolute against the working directory.
fn local_part(location: &str) -> PathBuf {
    let path = location.strip_prefix("file://").unwrap_or(location);
    let path = match path.find(['*', '?', '[', '{']) {
        Some(glob) => &path[..glob],
        None => path,
    };
    let path = Path::new(path);
    if path.is_absolute() {
        path.to_path_buf()
    } else {
        std::env::current_dir()
            .map(|dir| dir.join(path))
            .unwrap_or_else(|_| path.to_path_buf())
    }
}

/// `path` with symlinks and `..` resolved: its longest existing ancestor
/// canonicalized, the rest (not yet created) normalized by hand. `None`
/// when nothing of it can be resolved.
fn resolve(path: &Path) -> Option<PathBuf> {
    let mut existing = path;
    let canonical = loop {
        if let Ok(canonical) = std::fs::canonicalize(existing) {
            break canonical;
        }
        existing = existing.parent()?;
    };
    let rest = path.strip_prefix(existing).ok()?;
    let mut resolved = canonical;
    for component in rest.components() {
        match component {
            Component::Normal(part) => resolved.push(part),
            Component::ParentDir => {
                resolved.pop();
            }
            Component::CurDir => {}
            Component::RootDir | Component::Prefix(_) => return None,
        }
    }
    Some(resolved)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations_are_checked_after_resolving_dots_and_symlinks() {
        let dir = tempfile::tempdir().expect("temp dir");
        let allowed = dir.path().join("allowed");
        let outside = dir.path().join("outside");
        std::fs::create_dir_all(allowed.join("data")).expect("mkdir");
        std::fs::create_dir_all(&outside).expect("mkdir");
        std::os::unix::fs::symlink(&outside, allowed.join("link")).expect("symlink");
        let roots = PathRoots::new(&[
            allowed.to_string_lossy().into_owned(),
            "s3://bucket/prefix".into(),
        ])
        .expect("roots exist");
        let text = |path: PathBuf| path.to_string_lossy().into_owned();

        for ok in [
            text(allowed.join("data")),
            text(allowed.join("data/new/file.csv")),
            format!("file://{}", text(allowed.join("data"))),
            text(allowed.join("data/*.parquet")),
            "s3://bucket/prefix/t/part-0.parquet".into(),
            "s3://bucket/prefix".into(),
        ] {
            assert!(roots.check("test", &ok).is_ok(), "{ok}");
        }
        for refused in [
            text(outside.clone()),
            text(allowed.join("../outside/x.csv")),
            text(allowed.join("data/new/../../../outside")),
            text(allowed.join("link/x.csv")),
            text(allowed.join("link/new/dir")),
            "/etc/passwd".into(),
            "s3://bucket/prefixed/t".into(),
            "s3://other/prefix/t".into(),
            "s3://bucket/prefix/../secret".into(),
            "gs://bucket/prefix/t".into(),
        ] {
            let error = roots.check("test", &refused).expect_err(&refused);
            assert!(error.is_user_error());
            let message = error.to_string();
            assert!(message.contains(&refused), "{message}");
            assert!(message.contains("s3://bucket/prefix"), "{message}");
        }
        assert!(PathRoots::default().check("test", "/etc/passwd").is_ok());
        assert!(PathRoots::new(&["/no/such/root".into()]).is_err());
        assert!(PathRoots::new(&["s3://".into()]).is_err());
    }
}
