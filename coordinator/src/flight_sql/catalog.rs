//! Metadata from the coordinator's catalog: catalogs, schemas, tables
//! (with their Arrow schemas), table types and the server's SQL info.

use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow_flight::sql::metadata::{SqlInfoData, SqlInfoDataBuilder};
use arrow_flight::sql::{
    CommandGetCatalogs, CommandGetDbSchemas, CommandGetTableTypes, CommandGetTables, SqlInfo,
    SqlNullOrdering, SqlSupportedCaseSensitivity,
};
use datafusion::datasource::TableType;
use datafusion::prelude::SessionContext;
use tonic::Status;

/// The table types tables of this catalog have, as Flight SQL names them.
const TABLE_TYPES: [&str; 3] = ["TABLE", "VIEW", "LOCAL TEMPORARY"];

fn type_name(kind: TableType) -> &'static str {
    match kind {
        TableType::Base => TABLE_TYPES[0],
        TableType::View => TABLE_TYPES[1],
        TableType::Temporary => TABLE_TYPES[2],
    }
}

fn built(
    batch: Result<RecordBatch, arrow_flight::error::FlightError>,
) -> Result<RecordBatch, Status> {
    batch.map_err(|error| Status::internal(format!("building metadata: {error}")))
}

pub fn catalogs(
    session: &SessionContext,
    query: CommandGetCatalogs,
) -> Result<RecordBatch, Status> {
    let mut builder = query.into_builder();
    for name in session.catalog_names() {
        builder.append(name);
    }
    built(builder.build())
}

pub fn schemas(
    session: &SessionContext,
    query: CommandGetDbSchemas,
) -> Result<RecordBatch, Status> {
    let mut builder = query.into_builder();
    for catalog_name in session.catalog_names() {
        let Some(catalog) = session.catalog(&catalog_name) else {
            continue;
        };
        for schema in catalog.schema_names() {
            builder.append(&catalog_name, schema);
        }
    }
    built(builder.build())
}

/// Tables matching `query`'s filters (the builder applies the catalog,
/// schema and name patterns and the types).
pub async fn tables(
    session: &SessionContext,
    query: CommandGetTables,
) -> Result<RecordBatch, Status> {
    let mut builder = query.into_builder();
    for catalog_name in session.catalog_names() {
        let Some(catalog) = session.catalog(&catalog_name) else {
            continue;
        };
        for schema_name in catalog.schema_names() {
            let Some(schema) = catalog.schema(&schema_name) else {
                continue;
            };
            for table_name in schema.table_names() {
                let table = schema
                    .table(&table_name)
                    .await
                    .map_err(|error| Status::internal(format!("table {table_name}: {error}")))?;
                let Some(table) = table else {
                    continue; // Dropped meanwhile.
                };
                builder
                    .append(
                        &catalog_name,
                        &schema_name,
                        &table_name,
                        type_name(table.table_type()),
                        table.schema().as_ref(),
                    )
                    .map_err(|error| Status::internal(format!("table {table_name}: {error}")))?;
            }
        }
    }
    built(builder.build())
}

pub fn table_types(query: CommandGetTableTypes) -> Result<RecordBatch, Status> {
    let mut builder = query.into_builder();
    for kind in TABLE_TYPES {
        builder.append(kind);
    }
    built(builder.build())
}

/// What the server says of itself (`GetSqlInfo`).
pub fn sql_info() -> Arc<SqlInfoData> {
    let mut builder = SqlInfoDataBuilder::new();
    builder.append(SqlInfo::FlightSqlServerName, "tone");
    builder.append(SqlInfo::FlightSqlServerVersion, env!("CARGO_PKG_VERSION"));
    builder.append(SqlInfo::FlightSqlServerArrowVersion, "59");
    builder.append(SqlInfo::FlightSqlServerReadOnly, false);
    builder.append(SqlInfo::FlightSqlServerSql, true);
    builder.append(SqlInfo::FlightSqlServerSubstrait, false);
    builder.append(SqlInfo::FlightSqlServerTransaction, 0i32);
    builder.append(SqlInfo::FlightSqlServerCancel, true);
    builder.append(SqlInfo::FlightSqlServerStatementTimeout, 0i32);
    builder.append(SqlInfo::FlightSqlServerTransactionTimeout, 0i32);
    builder.append(SqlInfo::SqlDdlCatalog, false);
    builder.append(SqlInfo::SqlDdlSchema, true);
    builder.append(SqlInfo::SqlDdlTable, true);
    builder.append(
        SqlInfo::SqlIdentifierCase,
        SqlSupportedCaseSensitivity::SqlCaseSensitivityLowercase as i32,
    );
    builder.append(SqlInfo::SqlIdentifierQuoteChar, "\"");
    builder.append(
        SqlInfo::SqlQuotedIdentifierCase,
        SqlSupportedCaseSensitivity::SqlCaseSensitivityCaseInsensitive as i32,
    );
    builder.append(SqlInfo::SqlAllTablesAreSelectable, true);
    builder.append(
        SqlInfo::SqlNullOrdering,
        SqlNullOrdering::SqlNullsSortedHigh as i32,
    );
    builder.append(SqlInfo::SqlSearchStringEscape, "\\");
    builder.append(SqlInfo::SqlSchemaTerm, "schema");
    builder.append(SqlInfo::SqlCatalogTerm, "catalog");
    builder.append(SqlInfo::SqlTransactionsSupported, false);
    // The builder's values are all of known types: building cannot fail.
    Arc::new(
        builder
            .build()
            .unwrap_or_else(|error| panic!("tone's fixed SQL info does not build: {error}")),
    )
}

#[cfg(test)]
mod tests {
    use arrow::array::{Array, StringArray};

    use super::*;

    #[tokio::test]
    async fn tables_are_listed_with_their_schemas_and_filtered_by_pattern() {
        let session = SessionContext::new();
        session
            .sql("CREATE TABLE lineitem (l_orderkey BIGINT) AS VALUES (1)")
            .await
            .expect("table");
        session
            .sql("CREATE TABLE nation (n_name VARCHAR) AS VALUES ('x')")
            .await
            .expect("table");
        let query = CommandGetTables {
            table_name_filter_pattern: Some("line%".into()),
            include_schema: true,
            ..Default::default()
        };
        let batch = tables(&session, query).await.expect("tables");
        let names = batch
            .column_by_name("table_name")
            .and_then(|column| column.as_any().downcast_ref::<StringArray>().cloned())
            .expect("names");
        assert_eq!(names.len(), 1);
        assert_eq!(names.value(0), "lineitem");
        assert!(batch.column_by_name("table_schema").is_some());
        let all = catalogs(&session, CommandGetCatalogs {}).expect("catalogs");
        assert!(all.num_rows() >= 1);
        assert!(sql_info()
            .record_batch(vec![SqlInfo::FlightSqlServerName as u32])
            .is_ok());
    }
}
