//! How a context runs its actions: on the embedded engine, on a cluster
//! (the driver), or as a job's executor process on a worker.
//!
//! On a cluster every action (a Dataset or DataFrame action, a SQL
//! statement) is numbered in program order, and the driver keeps each
//! action's result. A job whose plan holds Rust closures runs them in
//! executor processes: each worker starts the driver's binary with the
//! same arguments and working directory, and the executor rebuilds the
//! pipeline. So that it builds exactly the driver's pipeline, even when
//! that depends on rows an earlier action returned (a loop's condition,
//! split points, values a closure captures), its earlier actions return
//! the driver's results, shipped with the job as blobs. Actions of one
//! context therefore run one at a time.

use std::io::Cursor;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use arrow::array::RecordBatch;
use arrow::datatypes::{Schema, SchemaRef};
use datafusion::physical_plan::ExecutionPlan;
use tone_engine::closure::{as_closure, ClosureRegistry};
use tone_engine::{Engine, EngineConfig};
use tone_proto::v1 as pb;
use tone_worker::executor::ExecutorSettings;

use super::located;
use crate::cluster::{ClusterClient, ClusterError, TableRef};
use crate::error::{Error, Result};

/// Results larger than this (encoded) are not kept for executors: a
/// pipeline built from them cannot run on a cluster.
const REPLAY_BYTES_MAX: usize = 256 * 1024 * 1024;

/// A driver's connection to a cluster.
pub(super) struct ClusterJobs {
    client: ClusterClient,
    tables: Mutex<Vec<TableRef>>,
    /// Plans DataFrames, configured like the coordinator's planner.
    pub(super) planner: Engine,
    // Closures are registered on a cluster context too, so ids come out as
    // in the job's executors, which build the same pipeline.
    pub(super) closures: Arc<ClosureRegistry>,
    /// Held for a whole action: its number is the log's length.
    actions: tokio::sync::Mutex<Actions>,
}

/// What the driver has shipped and done so far.
#[derive(Default)]
struct Actions {
    /// SHA-256 of this executable once uploaded (at the first job with
    /// closures).
    binary: Option<String>,
    /// Every action's result, in program order.
    log: Vec<Logged>,
}

/// An earlier action's result, as executors will replay it. Kept as rows
/// (shared buffers, no copy) and encoded only when a job with closures
/// ships it; kept after the upload too, since the coordinator may collect
/// the blob while the driver is idle.
struct Logged {
    result: std::result::Result<(Vec<RecordBatch>, SchemaRef), String>,
    /// Its blob's SHA-256 once uploaded.
    sha256: Option<String>,
}

impl Logged {
    /// Results over [`REPLAY_BYTES_MAX`] are logged as an error: holding
    /// them for a replay that may never come would double the driver's
    /// memory.
    fn of(outcome: &Result<Vec<RecordBatch>>, schema: SchemaRef) -> Self {
        let result = match outcome {
            Ok(batches) => {
                let bytes: usize = batches.iter().map(RecordBatch::get_array_memory_size).sum();
                if bytes > REPLAY_BYTES_MAX {
                    Err(format!(
                        "the result ({} MiB) is larger than {} MiB, too large to ship to executors; build the pipeline without collecting it",
                        bytes >> 20,
                        REPLAY_BYTES_MAX >> 20
                    ))
                } else {
                    Ok((batches.clone(), schema))
                }
            }
            Err(error) => Err(error.to_string()),
        };
        Self {
            result,
            sha256: None,
        }
    }
}

impl ClusterJobs {
    /// Plans with as many partitions as the cluster has task slots now (the
    /// coordinator's default for SQL), or this machine's cores when no
    /// worker has joined yet.
    pub(super) async fn new(client: ClusterClient, url: &str) -> Result<Self> {
        let slots: u32 = client.workers().await?.iter().map(|w| w.slots).sum();
        let partitions = match slots {
            0 => std::thread::available_parallelism().map_or(2, |count| count.get()),
            slots => slots as usize,
        };
        tracing::debug!(url, partitions, "connected to the cluster");
        Ok(Self {
            client,
            tables: Mutex::default(),
            planner: task_planner(partitions)?,
            closures: Arc::default(),
            actions: tokio::sync::Mutex::default(),
        })
    }

    pub(super) async fn register_table(&self, name: &str, path: &Path) -> Result<()> {
        let path = register_in(&self.planner, name, path).await?;
        let mut tables = self
            .tables
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        tables.retain(|table| table.name != name);
        tables.push(TableRef {
            name: name.to_string(),
            path: path.to_string_lossy().into_owned(),
        });
        Ok(())
    }

    /// Runs SQL on the coordinator (it plans it against its catalog).
    pub(super) async fn sql(&self, sql: &str) -> Result<Vec<RecordBatch>> {
        let mut actions = self.actions.lock().await;
        let tables = self
            .tables
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
            .clone();
        let partitions = self.planner.session().state().config().target_partitions();
        let outcome = self
            .client
            .sql(sql, &tables, partitions)
            .await
            .map_err(Error::from);
        let schema = match &outcome {
            Ok(batches) => batches.first().map(RecordBatch::schema),
            Err(_) => None,
        };
        let schema = schema.unwrap_or_else(|| Arc::new(Schema::empty()));
        actions.log.push(Logged::of(&outcome, schema));
        outcome
    }

    /// Runs a plan as a job of the cluster and collects its rows.
    pub(super) async fn run(&self, plan: Arc<dyn ExecutionPlan>) -> Result<Vec<RecordBatch>> {
        let mut actions = self.actions.lock().await;
        let schema = plan.schema();
        let outcome = self.submit(plan, &mut actions).await;
        actions.log.push(Logged::of(&outcome, schema));
        outcome
    }

    async fn submit(
        &self,
        plan: Arc<dyn ExecutionPlan>,
        actions: &mut Actions,
    ) -> Result<Vec<RecordBatch>> {
        // Scalar subqueries run here first, as the coordinator does for SQL.
        let plan = self.planner.prepare_plan(plan).await?;
        let closures = has_closures(&plan);
        let bytes = tone_engine::codec::encode_plan(plan)?;
        if !closures {
            return Ok(self.client.run_plan(bytes, None).await?);
        }
        let spec = self.executor_spec(actions).await?;
        match self.client.run_plan(bytes.clone(), Some(spec)).await {
            // The coordinator collects blobs idle past its ttl: a driver
            // idle that long ships them again, once.
            Err(ClusterError::MissingBlob { .. }) => {
                actions.binary = None;
                for entry in &mut actions.log {
                    entry.sha256 = None;
                }
                let spec = self.executor_spec(actions).await?;
                Ok(self.client.run_plan(bytes, Some(spec)).await?)
            }
            outcome => Ok(outcome?),
        }
    }

    /// How workers start this job's executors: this binary, its arguments
    /// and working directory, and the earlier actions' results (uploaded
    /// now if they are not yet).
    async fn executor_spec(&self, actions: &mut Actions) -> Result<pb::ExecutorSpec> {
        let binary_sha256 = match &actions.binary {
            Some(sha256) => sha256.clone(),
            None => {
                let executable = std::env::current_exe().map_err(|error| ClusterError::Binary {
                    path: PathBuf::from("(this executable)"),
                    reason: error.to_string(),
                })?;
                let sha256 = self.client.upload_binary(&executable).await?;
                actions.binary = Some(sha256.clone());
                sha256
            }
        };
        let mut results = Vec::with_capacity(actions.log.len());
        for entry in &mut actions.log {
            if entry.sha256.is_none() {
                let bytes = encode_result(&entry.result)?;
                entry.sha256 = Some(self.client.upload_bytes(bytes).await?);
            }
            results.extend(entry.sha256.clone());
        }
        let cwd = std::env::current_dir()
            .map(|dir| dir.to_string_lossy().into_owned())
            .unwrap_or_default();
        Ok(pb::ExecutorSpec {
            binary_sha256,
            args: std::env::args().skip(1).collect(),
            action: actions.log.len() as u32,
            partitions: self.planner.session().state().config().target_partitions() as u32,
            cwd,
            results,
        })
    }
}

/// A job's executor process: mirrors the driver's actions.
pub(super) struct ExecutorJobs {
    settings: ExecutorSettings,
    pub(super) closures: Arc<ClosureRegistry>,
    pub(super) planner: Engine,
    /// Actions run so far, counted as the driver counts them.
    actions: AtomicU32,
}

impl ExecutorJobs {
    pub(super) fn new(settings: ExecutorSettings) -> Result<Self> {
        let partitions = match settings.partitions {
            0 => std::thread::available_parallelism().map_or(2, |count| count.get()),
            given => given,
        };
        Ok(Self {
            settings,
            closures: Arc::default(),
            planner: task_planner(partitions)?,
            actions: AtomicU32::new(0),
        })
    }

    /// An action before the job's: the driver's result of it.
    pub(super) fn replay_action(&self) -> Result<Vec<RecordBatch>> {
        let action = self.actions.fetch_add(1, Ordering::SeqCst);
        if action >= self.settings.action {
            return Err(Error::Replay {
                message: format!(
                    "action {action} is not a job with closures, but job {} is that action of the driver; the program did not build the same pipeline here",
                    self.settings.job_id
                ),
            });
        }
        self.replayed(action)
    }

    fn replayed(&self, action: u32) -> Result<Vec<RecordBatch>> {
        let path = self
            .settings
            .results
            .get(action as usize)
            .ok_or_else(|| Error::Replay {
                message: format!("the driver sent no result for its action {action}"),
            })?;
        let bytes = std::fs::read(path).map_err(|error| Error::Replay {
            message: format!("{}: {error}", path.display()),
        })?;
        decode_result(&bytes)
    }

    /// The job's action serves its tasks and ends the process; earlier
    /// ones return the driver's results.
    pub(super) async fn run(&self) -> Result<Vec<RecordBatch>> {
        let action = self.actions.fetch_add(1, Ordering::SeqCst);
        if action < self.settings.action {
            return self.replayed(action);
        }
        // Every closure of this job is registered now: serve its tasks
        // until the worker closes stdin, then end the process (the user's
        // code after this action is the driver's).
        let settings = self.settings.clone();
        match tone_worker::executor::serve(settings, Arc::clone(&self.closures)).await {
            Ok(()) => std::process::exit(0),
            Err(error) => {
                eprintln!("tone: executor of job {}: {error}", self.settings.job_id);
                std::process::exit(3)
            }
        }
    }
}

/// Registers table `name` (replacing one of that name) in a planning
/// engine; returns the location it was registered with (see [`located`]).
pub(super) async fn register_in(planner: &Engine, name: &str, path: &Path) -> Result<PathBuf> {
    let path = located(path)?;
    planner.session().deregister_table(name)?;
    planner.register_table(name, &path).await?;
    Ok(path)
}

/// An engine that plans for tasks run as separate plan instances.
fn task_planner(partitions: usize) -> Result<Engine> {
    let planner = Engine::new(EngineConfig {
        partitions: partitions.max(1),
        ..EngineConfig::default()
    })?;
    planner.plan_for_tasks();
    Ok(planner)
}

fn has_closures(plan: &Arc<dyn ExecutionPlan>) -> bool {
    as_closure(plan.as_ref()).is_some() || plan.children().into_iter().any(has_closures)
}

const RESULT_ROWS: u8 = 0;
const RESULT_ERROR: u8 = 1;

/// An action's outcome as bytes: a tag, then an Arrow IPC stream of the
/// rows or the error's text.
fn encode_result(
    result: &std::result::Result<(Vec<RecordBatch>, SchemaRef), String>,
) -> Result<Vec<u8>> {
    let (batches, schema) = match result {
        Ok(rows) => rows,
        Err(message) => {
            let mut bytes = vec![RESULT_ERROR];
            bytes.extend(message.as_bytes());
            return Ok(bytes);
        }
    };
    let schema = batches
        .first()
        .map_or_else(|| Arc::clone(schema), RecordBatch::schema);
    let mut bytes = vec![RESULT_ROWS];
    let arrow = datafusion::error::DataFusionError::from;
    let mut writer =
        arrow::ipc::writer::StreamWriter::try_new(&mut bytes, &schema).map_err(arrow)?;
    for batch in batches {
        writer.write(batch).map_err(arrow)?;
    }
    writer.finish().map_err(arrow)?;
    drop(writer);
    Ok(bytes)
}

fn decode_result(bytes: &[u8]) -> Result<Vec<RecordBatch>> {
    let bad = |reason: String| Error::Replay {
        message: format!("a bad result from the driver: {reason}"),
    };
    match bytes.split_first() {
        Some((&RESULT_ROWS, ipc)) => {
            let reader = arrow::ipc::reader::StreamReader::try_new(Cursor::new(ipc), None)
                .map_err(|error| bad(error.to_string()))?;
            reader
                .collect::<std::result::Result<Vec<_>, _>>()
                .map_err(|error| bad(error.to_string()))
        }
        Some((&RESULT_ERROR, text)) => Err(Error::Replay {
            message: String::from_utf8_lossy(text).into_owned(),
        }),
        _ => Err(bad("unknown tag".into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::Int32Array;
    use arrow::datatypes::{DataType, Field};

    #[test]
    fn results_replay_as_the_driver_saw_them() {
        let schema = Arc::new(Schema::new(vec![Field::new("n", DataType::Int32, false)]));
        let batch = RecordBatch::try_new(
            Arc::clone(&schema),
            vec![Arc::new(Int32Array::from(vec![3, 1, 2]))],
        )
        .expect("batch");
        let logged = Logged::of(&Ok(vec![batch.clone()]), Arc::clone(&schema));
        let bytes = encode_result(&logged.result).expect("encodes");
        assert_eq!(decode_result(&bytes).expect("decodes"), vec![batch]);

        let empty = Logged::of(&Ok(Vec::new()), schema);
        let bytes = encode_result(&empty.result).expect("encodes");
        assert!(decode_result(&bytes).expect("decodes").is_empty());

        let failed = Err(Error::Usage {
            message: "no such table".into(),
        });
        let bytes =
            encode_result(&Logged::of(&failed, Arc::new(Schema::empty())).result).expect("encodes");
        let error = decode_result(&bytes).expect_err("replays the failure");
        assert!(error.to_string().contains("no such table"), "{error}");
    }
}
