//! Prepared statements: a handle per statement, its shape planned when it
//! is made, and the parameter rows a client binds to it.

use std::collections::HashMap;
use std::sync::Mutex;

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use datafusion::common::{ParamValues, ScalarValue};
use tone_engine::parameters::StatementShape;
use tonic::Status;

/// Prepared statements open at once, over all clients; past it the
/// oldest is closed (clients that never close them cannot fill memory).
pub const MAX_PREPARED: usize = 1024;
/// Bytes of parameter rows one statement may hold.
pub const MAX_PARAMETER_BYTES: usize = 4 * 1024 * 1024;
/// Parameter rows one bind may carry (each row runs an update once).
pub const MAX_PARAMETER_ROWS: usize = 10_000;

/// A prepared statement.
#[derive(Clone)]
pub struct Prepared {
    pub sql: String,
    pub shape: StatementShape,
    /// The rows of parameters bound last, if any.
    pub bound: Vec<RecordBatch>,
    /// When it was made, for closing the oldest.
    made: u64,
}

impl Prepared {
    /// The parameter values of each bound row; one empty set when the
    /// statement takes none.
    pub fn rows(&self) -> Result<Vec<Option<ParamValues>>, Status> {
        let wanted = self.shape.parameters.fields().len();
        if wanted == 0 {
            return Ok(vec![None]);
        }
        if self.bound.iter().all(|batch| batch.num_rows() == 0) {
            return Err(Status::invalid_argument(format!(
                "the statement takes {wanted} parameter(s) and none were bound"
            )));
        }
        let mut rows = Vec::new();
        for batch in &self.bound {
            for row in 0..batch.num_rows() {
                let values = batch
                    .columns()
                    .iter()
                    .map(|column| ScalarValue::try_from_array(column, row))
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|error| Status::invalid_argument(format!("a parameter: {error}")))?;
                rows.push(Some(ParamValues::from(values)));
            }
        }
        Ok(rows)
    }
}

/// The open prepared statements, by handle.
#[derive(Default)]
pub struct PreparedStatements {
    open: Mutex<(u64, HashMap<Vec<u8>, Prepared>)>,
}

impl PreparedStatements {
    /// Keeps a new statement; its handle.
    pub fn add(&self, sql: String, shape: StatementShape) -> Vec<u8> {
        let handle = uuid::Uuid::new_v4().as_bytes().to_vec();
        let mut open = self.lock();
        let (counter, statements) = &mut *open;
        *counter += 1;
        if statements.len() >= MAX_PREPARED {
            let oldest = statements
                .iter()
                .min_by_key(|(_, statement)| statement.made)
                .map(|(handle, _)| handle.clone());
            if let Some(oldest) = oldest {
                statements.remove(&oldest);
            }
        }
        let made = *counter;
        statements.insert(
            handle.clone(),
            Prepared {
                sql,
                shape,
                bound: Vec::new(),
                made,
            },
        );
        handle
    }

    pub fn get(&self, handle: &[u8]) -> Result<Prepared, Status> {
        self.lock()
            .1
            .get(handle)
            .cloned()
            .ok_or_else(|| unknown(handle))
    }

    /// Binds `batches` as the statement's parameter rows, after checking
    /// they match its parameters and their bounds.
    pub fn bind(&self, handle: &[u8], batches: Vec<RecordBatch>) -> Result<(), Status> {
        let mut open = self.lock();
        let statement = open.1.get_mut(handle).ok_or_else(|| unknown(handle))?;
        check_parameters(&statement.shape.parameters, &batches)?;
        statement.bound = batches;
        Ok(())
    }

    pub fn close(&self, handle: &[u8]) -> Result<(), Status> {
        self.lock()
            .1
            .remove(handle)
            .map(|_| ())
            .ok_or_else(|| unknown(handle))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, (u64, HashMap<Vec<u8>, Prepared>)> {
        // Whole values are inserted and removed: a panic elsewhere leaves
        // the map consistent.
        self.open
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

fn unknown(handle: &[u8]) -> Status {
    Status::not_found(format!(
        "no prepared statement has handle {} (closed, or never made here)",
        hex(handle)
    ))
}

fn hex(bytes: &[u8]) -> String {
    bytes
        .iter()
        .take(32)
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

/// Parameter rows must have one column per parameter, and stay within
/// [`MAX_PARAMETER_ROWS`] and [`MAX_PARAMETER_BYTES`].
pub fn check_parameters(parameters: &SchemaRef, batches: &[RecordBatch]) -> Result<(), Status> {
    let rows: usize = batches.iter().map(RecordBatch::num_rows).sum();
    if rows > MAX_PARAMETER_ROWS {
        return Err(Status::invalid_argument(format!(
            "{rows} parameter rows were bound; at most {MAX_PARAMETER_ROWS} are taken"
        )));
    }
    let bytes: usize = batches.iter().map(RecordBatch::get_array_memory_size).sum();
    if bytes > MAX_PARAMETER_BYTES {
        return Err(Status::invalid_argument(format!(
            "the bound parameters take {bytes} bytes; at most {MAX_PARAMETER_BYTES} are taken"
        )));
    }
    let wanted = parameters.fields().len();
    for batch in batches {
        if batch.num_columns() != wanted {
            return Err(Status::invalid_argument(format!(
                "the statement takes {wanted} parameter(s) but {} were bound",
                batch.num_columns()
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::Int64Array;
    use arrow::datatypes::{DataType, Field, Schema};

    use super::*;

    fn shape(parameters: usize) -> StatementShape {
        let fields = (1..=parameters)
            .map(|n| Field::new(format!("${n}"), DataType::Int64, true))
            .collect::<Vec<_>>();
        StatementShape {
            schema: Arc::new(Schema::empty()),
            parameters: Arc::new(Schema::new(fields)),
            is_ddl: false,
        }
    }

    fn rows(values: Vec<i64>) -> RecordBatch {
        RecordBatch::try_from_iter([("a", Arc::new(Int64Array::from(values)) as _)]).expect("batch")
    }

    #[test]
    fn bound_rows_become_parameter_values_and_bad_binds_are_refused() {
        let statements = PreparedStatements::default();
        let handle = statements.add("SELECT $1".into(), shape(1));
        assert!(statements.get(&handle).expect("open").rows().is_err());
        statements
            .bind(&handle, vec![rows(vec![7, 8])])
            .expect("bound");
        assert_eq!(
            statements
                .get(&handle)
                .expect("open")
                .rows()
                .expect("rows")
                .len(),
            2
        );
        let two = RecordBatch::try_from_iter([
            ("a", Arc::new(Int64Array::from(vec![1])) as _),
            ("b", Arc::new(Int64Array::from(vec![2])) as _),
        ])
        .expect("batch");
        let refused = statements
            .bind(&handle, vec![two])
            .expect_err("two columns for one");
        assert_eq!(refused.code(), tonic::Code::InvalidArgument);
        let huge = rows((0..(MAX_PARAMETER_ROWS as i64 + 1)).collect());
        assert!(statements.bind(&handle, vec![huge]).is_err());
        statements.close(&handle).expect("closed");
        assert_eq!(
            statements.get(&handle).err().map(|status| status.code()),
            Some(tonic::Code::NotFound)
        );
    }

    #[test]
    fn past_the_bound_the_oldest_statement_is_closed() {
        let statements = PreparedStatements::default();
        let first = statements.add("SELECT 1".into(), shape(0));
        for _ in 0..MAX_PREPARED {
            statements.add("SELECT 1".into(), shape(0));
        }
        assert!(statements.get(&first).is_err());
        assert_eq!(statements.lock().1.len(), MAX_PREPARED);
    }
}
