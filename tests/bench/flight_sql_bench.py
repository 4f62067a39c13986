"""Flight SQL through ADBC against a tone cluster: each TPC-H query's median
time over ITERATIONS runs (after one warm-up), and rows/s of a whole
`SELECT * FROM lineitem` streamed to this client. Prints one JSON object.

Usage: flight_sql_bench.py URI DATA_DIR QUERIES_DIR ITERATIONS
"""

import json
import os
import statistics
import sys
import time

import adbc_driver_flightsql.dbapi as flight_sql

TABLES = ["customer", "lineitem", "nation", "orders", "part", "partsupp", "region", "supplier"]


def main():
    uri, data, queries_dir, iterations = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    conn = flight_sql.connect(uri)
    cur = conn.cursor()
    for table in TABLES:
        cur.execute(
            f"CREATE EXTERNAL TABLE IF NOT EXISTS {table} STORED AS PARQUET "
            f"LOCATION '{os.path.join(data, table)}/'"
        )
    figures = {}
    for name in sorted(os.listdir(queries_dir)):
        if not name.endswith(".sql"):
            continue
        with open(os.path.join(queries_dir, name)) as f:
            sql = f.read()
        times = []
        rows = 0
        for run in range(iterations + 1):
            started = time.monotonic()
            cur.execute(sql)
            rows = cur.fetch_arrow_table().num_rows
            if run > 0:
                times.append(time.monotonic() - started)
        figures[name[:-4]] = {"median_s": statistics.median(times), "rows": rows}
    scans = []
    for _ in range(iterations):
        started = time.monotonic()
        cur.execute("SELECT * FROM lineitem")
        reader = cur.fetch_record_batch()
        rows = sum(batch.num_rows for batch in reader)
        scans.append((time.monotonic() - started, rows))
    seconds, rows = sorted(scans)[len(scans) // 2]
    print(json.dumps({"queries": figures, "scan_rows": rows, "scan_s": seconds,
                      "scan_rows_per_s": rows / seconds}))


if __name__ == "__main__":
    main()
