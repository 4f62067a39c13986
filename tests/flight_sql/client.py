"""Real Flight SQL clients against a tone cluster, driven by
tests/flight_sql/mod.rs: the ADBC driver (adbc-driver-flightsql, through
its DB-API) and pyarrow.flight with raw Flight SQL commands.

Usage: client.py adbc|raw|cancel CONFIG.json

CONFIG holds uri, token, ca (a PEM file or null), data (the TPC-H dir),
queries ({name: sql}) and out (a dir for result files). Each result is
written as an Arrow IPC file for the Rust side to compare with the
embedded engine; everything else observed is printed as one JSON object
on stdout's last line.
"""

import json
import os
import sys
import threading
import time

import pyarrow as pa
import pyarrow.flight as flight
import pyarrow.ipc as ipc

TABLES = ["customer", "lineitem", "nation", "orders", "part", "partsupp", "region", "supplier"]
# Runs until cancelled: every pair of lineitem rows.
ENDLESS = (
    "SELECT count(*) FROM lineitem a, lineitem b "
    "WHERE a.l_orderkey + b.l_orderkey < 0 AND a.l_comment <> b.l_comment"
)


def write_result(out, name, table):
    with pa.OSFile(os.path.join(out, name + ".arrow"), "wb") as sink:
        with ipc.new_file(sink, table.schema) as writer:
            writer.write_table(table)


def adbc_connect(config, basic):
    import adbc_driver_flightsql.dbapi as flight_sql
    from adbc_driver_flightsql import DatabaseOptions

    kwargs = {}
    if config["ca"]:
        with open(config["ca"]) as f:
            kwargs[DatabaseOptions.TLS_ROOT_CERTS.value] = f.read()
    if basic:
        kwargs["username"] = "tone"
        kwargs["password"] = config["token"]
    else:
        kwargs[DatabaseOptions.AUTHORIZATION_HEADER.value] = "Bearer " + config["token"]
    return flight_sql.connect(config["uri"], db_kwargs=kwargs)


def error_of(action):
    try:
        action()
    except Exception as error:  # the client's own error type, named in the report
        return {"type": type(error).__name__, "message": str(error)}
    return None


def adbc(config):
    report = {}
    out = config["out"]
    # Basic auth through Handshake on this connection.
    conn = adbc_connect(config, basic=True)
    cur = conn.cursor()
    # DDL through execute (sent as a query, as the DB-API does).
    for table in TABLES:
        path = os.path.join(config["data"], table)
        cur.execute(
            f"CREATE EXTERNAL TABLE IF NOT EXISTS {table} STORED AS PARQUET LOCATION '{path}/'"
        )
    for name, sql in sorted(config["queries"].items()):
        cur.execute(sql)
        write_result(out, name, cur.fetch_arrow_table())
    # A prepared statement with parameters (qmark style), run twice.
    sql = "SELECT l_returnflag, count(*) AS n FROM lineitem WHERE l_quantity > ? AND l_shipmode = ? GROUP BY l_returnflag"
    cur.execute(sql, (30, "AIR"))
    write_result(out, "prepared_30_air", cur.fetch_arrow_table())
    cur.execute(sql, (45, "MAIL"))
    write_result(out, "prepared_45_mail", cur.fetch_arrow_table())
    # Metadata.
    objects = conn.adbc_get_objects(depth="all").read_all().to_pylist()
    tables = []
    for catalog in objects:
        for schema in catalog["catalog_db_schemas"] or []:
            for table in schema["db_schema_tables"] or []:
                tables.append(
                    {
                        "catalog": catalog["catalog_name"],
                        "schema": schema["db_schema_name"],
                        "table": table["table_name"],
                        "type": table["table_type"],
                        "columns": [c["column_name"] for c in table["table_columns"] or []],
                    }
                )
    report["tables"] = tables
    report["lineitem_schema"] = [f.name for f in conn.adbc_get_table_schema("lineitem")]
    report["table_types"] = conn.adbc_get_table_types()
    info = conn.adbc_get_info()
    report["vendor_name"] = info.get("vendor_name")
    # Bad queries surface as errors naming the cause; the service stays up.
    report["syntax_error"] = error_of(lambda: cur.execute("SELEC 1 FROM nation"))
    report["unknown_table"] = error_of(lambda: cur.execute("SELECT * FROM no_such_table"))
    report["failing_job"] = error_of(
        lambda: (cur.execute("SELECT CAST(n_name AS INT) FROM nation"), cur.fetchall())
    )
    cur.execute("SELECT count(*) AS n FROM nation")
    report["after_errors"] = cur.fetchall()[0][0]
    # An update through execute_update (COPY writes files, returns a count).
    copy_to = os.path.join(out, "nation_copy.parquet")
    cur.execute(f"COPY (SELECT * FROM nation) TO '{copy_to}' STORED AS PARQUET")
    report["copy_rows"] = cur.fetchall()[0][0]
    report["copied_file_exists"] = os.path.exists(copy_to)
    cur.adbc_statement.set_sql_query(
        f"COPY (SELECT * FROM region) TO '{os.path.join(out, 'region_copy.parquet')}' STORED AS PARQUET"
    )
    report["update_count"] = cur.adbc_statement.execute_update()
    cur.close()
    conn.close()
    # A bearer token instead of basic auth; a wrong token is refused.
    conn = adbc_connect(config, basic=False)
    cur = conn.cursor()
    cur.execute("SELECT count(*) FROM region")
    report["bearer_count"] = cur.fetchall()[0][0]
    conn.close()
    bad = dict(config, token="not-a-token")
    report["bad_token"] = error_of(
        lambda: adbc_connect(bad, basic=False).cursor().execute("SELECT 1")
    )
    # Cancel from another thread while the query runs.
    conn = adbc_connect(config, basic=True)
    cur = conn.cursor()
    timer = threading.Timer(3.0, cur.adbc_cancel)
    timer.start()
    started = time.monotonic()
    report["cancelled"] = error_of(lambda: cur.execute(ENDLESS))
    report["cancel_seconds"] = time.monotonic() - started
    timer.cancel()
    conn.close()
    print(json.dumps(report, default=str))


# --- pyarrow.flight with raw Flight SQL commands -------------------------

SQL = "type.googleapis.com/arrow.flight.protocol.sql."


def varint(n):
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def field(number, payload):
    """A length-delimited protobuf field."""
    return varint(number << 3 | 2) + varint(len(payload)) + payload


def any_of(name, message):
    return field(1, (SQL + name).encode()) + field(2, message)


def read_field(data, wanted):
    """The first length-delimited field `wanted` of a protobuf message."""
    at = 0
    while at < len(data):
        key = 0
        shift = 0
        while True:
            byte = data[at]
            at += 1
            key |= (byte & 0x7F) << shift
            shift += 7
            if byte < 0x80:
                break
        number, kind = key >> 3, key & 7
        if kind == 2:
            length = 0
            shift = 0
            while True:
                byte = data[at]
                at += 1
                length |= (byte & 0x7F) << shift
                shift += 7
                if byte < 0x80:
                    break
            if number == wanted:
                return data[at : at + length]
            at += length
        elif kind == 0:
            while data[at] >= 0x80:
                at += 1
            at += 1
        else:
            raise ValueError(f"unexpected wire type {kind}")
    return None


def flight_client(location, config, token=True):
    kwargs = {}
    if config["ca"]:
        with open(config["ca"], "rb") as f:
            kwargs["tls_root_certs"] = f.read()
    client = flight.FlightClient(location, **kwargs)
    return client


def raw(config):
    report = {}
    out = config["out"]
    uri = config["uri"]
    client = flight_client(uri, config)
    # Basic auth through Handshake gives the bearer header.
    header = client.authenticate_basic_token(b"tone", config["token"].encode())
    options = flight.FlightCallOptions(headers=[header])
    report["handshake_header"] = header[0].decode()
    # Without the token: refused.
    report["no_token"] = error_of(
        lambda: client.get_flight_info(
            flight.FlightDescriptor.for_command(
                any_of("CommandStatementQuery", field(1, b"SELECT 1"))
            )
        )
    )

    def info_of(command, call_options=options):
        return client.get_flight_info(flight.FlightDescriptor.for_command(command), call_options)

    def read_all(info):
        tables = []
        for endpoint in info.endpoints:
            if endpoint.locations:
                reader = flight_client(endpoint.locations[0], config).do_get(endpoint.ticket)
            else:
                reader = client.do_get(endpoint.ticket, options)
            tables.append(reader.read_all())
        return pa.concat_tables(tables) if tables else info.schema.empty_table()

    # Statement execution, results read where the endpoints say.
    for name, sql in sorted(config["queries"].items()):
        info = info_of(any_of("CommandStatementQuery", field(1, sql.encode())))
        report.setdefault("locations", []).extend(
            loc.uri.decode() if isinstance(loc.uri, bytes) else str(loc.uri)
            for e in info.endpoints
            for loc in e.locations
        )
        write_result(out, "raw_" + name, read_all(info))
    # A query with no rows still has its schema.
    info = info_of(any_of("CommandStatementQuery", field(1, b"SELECT n_name FROM nation WHERE n_nationkey < 0")))
    empty = read_all(info)
    report["empty_rows"] = empty.num_rows
    report["empty_columns"] = empty.schema.names
    # Metadata commands.
    tables = read_all(info_of(any_of("CommandGetTables", b"")))
    report["raw_tables"] = sorted(tables.column("table_name").to_pylist())
    report["raw_catalogs"] = read_all(info_of(any_of("CommandGetCatalogs", b""))).num_rows
    report["raw_table_types"] = read_all(info_of(any_of("CommandGetTableTypes", b""))).column(0).to_pylist()
    report["raw_sql_info_rows"] = read_all(info_of(any_of("CommandGetSqlInfo", b""))).num_rows
    # Malformed and unknown commands, refused with a clear status.
    report["garbage_command"] = error_of(lambda: info_of(b"\xff\xff\xff"))
    report["bad_inner_command"] = error_of(
        lambda: info_of(field(1, (SQL + "CommandStatementQuery").encode()) + field(2, b"\xff\xff"))
    )
    report["unknown_command"] = error_of(lambda: info_of(any_of("CommandNoSuchThing", b"")))
    report["unknown_handle"] = error_of(
        lambda: info_of(any_of("CommandPreparedStatementQuery", field(1, b"no-such-handle")))
    )
    report["bad_ticket"] = error_of(lambda: client.do_get(flight.Ticket(b"\x00garbage"), options).read_all())
    # A prepared statement through actions and DoPut.
    create = any_of(
        "ActionCreatePreparedStatementRequest",
        field(1, b"SELECT r_name FROM region WHERE r_regionkey = $1"),
    )
    result = list(client.do_action(flight.Action("CreatePreparedStatement", create), options))
    created = read_field(result[0].body.to_pybytes(), 2)  # Any.value
    handle = read_field(created, 1)
    command = any_of("CommandPreparedStatementQuery", field(1, handle))
    params = pa.table({"$1": pa.array([3], pa.int32())})
    writer, reader = client.do_put(flight.FlightDescriptor.for_command(command), params.schema, options)
    writer.write_table(params)
    writer.done_writing()
    reader.read()
    writer.close()
    report["prepared_rows"] = read_all(info_of(command)).column(0).to_pylist()
    # Too many parameter bytes: refused, the statement still usable.
    big = pa.table({"$1": pa.array(list(range(2_000_000)), pa.int32())})
    def oversized():
        writer, reader = client.do_put(flight.FlightDescriptor.for_command(command), big.schema, options)
        writer.write_table(big, max_chunksize=100_000)
        writer.done_writing()
        reader.read()
        writer.close()
    report["oversized_parameters"] = error_of(oversized)
    report["prepared_after_oversized"] = read_all(info_of(command)).column(0).to_pylist()
    close = any_of("ActionClosePreparedStatementRequest", field(1, handle))
    list(client.do_action(flight.Action("ClosePreparedStatement", close), options))
    report["closed_handle"] = error_of(lambda: info_of(command))
    # CancelFlightInfo on a finished query lets its results go: reading
    # them fails once the workers dropped them.
    info = info_of(any_of("CommandStatementQuery", field(1, b"SELECT * FROM nation")))
    result = list(client.do_action(flight.Action("CancelFlightInfo", field(1, info.serialize())), options))
    report["cancel_flight_info"] = list(result[0].body.to_pybytes())
    until = time.monotonic() + 60
    gone = None
    while gone is None and time.monotonic() < until:
        gone = error_of(lambda: read_all(info))
        time.sleep(0.2)
    report["read_after_cancel"] = gone
    # The older CancelQuery action.
    done = info_of(any_of("CommandStatementQuery", field(1, b"SELECT 1")))
    legacy = any_of("ActionCancelQueryRequest", field(1, done.serialize()))
    result = list(client.do_action(flight.Action("CancelQuery", legacy), options))
    report["cancel_query"] = list(read_field(result[0].body.to_pybytes(), 2))
    # An update through DoPut with CommandStatementUpdate.
    update = any_of(
        "CommandStatementUpdate",
        field(1, f"COPY (SELECT * FROM nation) TO '{os.path.join(out, 'raw_copy.parquet')}' STORED AS PARQUET".encode()),
    )
    writer, reader = client.do_put(flight.FlightDescriptor.for_command(update), pa.schema([]), options)
    writer.done_writing()
    put_result = reader.read()
    writer.close()
    # DoPutUpdateResult { int64 record_count = 1 }: a varint field.
    payload = put_result.to_pybytes() if put_result is not None else b""
    report["update_result_bytes"] = list(payload)
    # DDL through CommandStatementUpdate, then through CommandStatementQuery
    # (no endpoints), then a query of what they made.
    nation = os.path.join(config["data"], "nation")
    ddl = any_of(
        "CommandStatementUpdate",
        field(1, f"CREATE EXTERNAL TABLE nation_u STORED AS PARQUET LOCATION '{nation}/'".encode()),
    )
    writer, reader = client.do_put(flight.FlightDescriptor.for_command(ddl), pa.schema([]), options)
    writer.done_writing()
    reader.read()
    writer.close()
    view = info_of(any_of("CommandStatementQuery", field(1, b"CREATE VIEW nation_v AS SELECT n_name FROM nation_u")))
    report["ddl_query_endpoints"] = len(view.endpoints)
    counted = read_all(info_of(any_of("CommandStatementQuery", field(1, b"SELECT count(*) AS n FROM nation_v"))))
    report["ddl_view_rows"] = counted.column(0).to_pylist()
    # A client deadline on a running query: the job is cancelled.
    slow = flight.FlightCallOptions(headers=[header], timeout=3.0)
    report["deadline"] = error_of(
        lambda: info_of(any_of("CommandStatementQuery", field(1, ENDLESS.encode())), slow)
    )
    print(json.dumps(report, default=str))


def main():
    mode, path = sys.argv[1], sys.argv[2]
    with open(path) as f:
        config = json.load(f)
    {"adbc": adbc, "raw": raw}[mode](config)


if __name__ == "__main__":
    main()
