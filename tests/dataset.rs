//! Typed datasets and the examples built on them, checked against plain
//! Rust std over the same input (embedded).

#[path = "../examples/inverted_index.rs"]
#[allow(dead_code)]
mod inverted_index;
#[path = "../examples/pagerank.rs"]
#[allow(dead_code)]
pub(crate) mod pagerank;
#[path = "../examples/terasort.rs"]
#[allow(dead_code)]
pub(crate) mod terasort;
#[path = "../examples/typed_join.rs"]
#[allow(dead_code)]
mod typed_join;
#[path = "../examples/wordcount.rs"]
#[allow(dead_code)]
pub(crate) mod wordcount;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;

use tone::{Context, EngineConfig};

fn context(partitions: usize) -> Context {
    Context::local_with(EngineConfig {
        partitions,
        ..EngineConfig::default()
    })
    .expect("embedded context")
}

/// Text with mixed case and uneven whitespace over three files.
fn write_text(dir: &Path) {
    std::fs::create_dir_all(dir).expect("text dir");
    for file in 0..3 {
        let mut text = String::new();
        for line in 0..400 {
            for word in 0..(line % 7) {
                let word = format!("Word{}", (line * 31 + word * 17 + file) % 97);
                let word = if line % 2 == 0 {
                    word.to_uppercase()
                } else {
                    word
                };
                text.push_str(&word);
                text.push_str(if word.len() % 2 == 0 { "  " } else { "\t" });
            }
            text.push('\n');
        }
        std::fs::write(dir.join(format!("part-{file}.txt")), text).expect("write text");
    }
}

fn std_word_counts(dir: &Path) -> HashMap<String, u64> {
    let mut counts = HashMap::new();
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .expect("dir")
        .map(|e| e.expect("entry").path())
        .collect();
    files.sort();
    for file in files {
        for line in std::fs::read_to_string(file).expect("read").lines() {
            for word in line.split_whitespace() {
                *counts.entry(word.to_lowercase()).or_insert(0) += 1;
            }
        }
    }
    counts
}

#[tokio::test(flavor = "multi_thread")]
async fn wordcount_matches_std() {
    let temp = tempfile::tempdir().expect("temp");
    let input = temp.path().join("text");
    write_text(&input);
    let expected = std_word_counts(&input);
    let ctx = context(3);
    let found: HashMap<String, u64> = wordcount::word_counts(&ctx, &[input.clone()])
        .collect()
        .await
        .expect("word count")
        .into_iter()
        .collect();
    assert_eq!(found, expected);

    // The example's CSV output: header `word,count`, the same counts.
    let output = temp.path().join("out");
    let args: Vec<String> = [
        "--input",
        input.to_str().expect("utf-8"),
        "--output",
        output.to_str().expect("utf-8"),
    ]
    .iter()
    .map(|arg| arg.to_string())
    .collect();
    wordcount::run(&args).await.expect("wordcount --output");
    assert_eq!(read_word_counts(&output), expected);

    // Tone neither overwrites nor appends: the same folder is refused.
    let again = wordcount::run(&args)
        .await
        .expect_err("a folder with files");
    assert!(again.to_string().contains("not empty"), "{again}");
    assert_eq!(read_word_counts(&output), expected);
}

/// The counts in wordcount's CSV output folder: committed `part-*.csv`
/// files with a `word,count` header, nothing left uncommitted.
pub(crate) fn read_word_counts(output: &Path) -> HashMap<String, u64> {
    let mut written = HashMap::new();
    assert!(
        output.join("_SUCCESS").is_file(),
        "a committed output holds _SUCCESS"
    );
    for file in std::fs::read_dir(output).expect("output") {
        let path = file.expect("entry").path();
        let name = path
            .file_name()
            .and_then(|name| name.to_str())
            .unwrap_or("");
        if name == "_SUCCESS" {
            continue;
        }
        assert!(
            name.starts_with("part-") && name.ends_with(".csv"),
            "only committed part files remain: {name}"
        );
        let text = std::fs::read_to_string(&path).expect("csv");
        let mut lines = text.lines();
        assert_eq!(lines.next(), Some("word,count"));
        for line in lines {
            let (word, count) = line.rsplit_once(',').expect("two fields");
            let fresh = written.insert(word.to_string(), count.parse::<u64>().expect("count"));
            assert!(fresh.is_none(), "{word} written twice");
        }
    }
    written
}

#[tokio::test(flavor = "multi_thread")]
async fn inverted_index_matches_std() {
    let temp = tempfile::tempdir().expect("temp");
    let input = temp.path().join("docs");
    let expected = inverted_index_input(&input);
    let args = vec!["--input".to_string(), input.display().to_string()];
    let found = inverted_index::run(&args)
        .await
        .expect("inverted_index runs");
    assert_eq!(found, expected);
}

/// Writes 300 documents (`DOC_ID<TAB>TEXT` lines) into 3 files in `input`;
/// returns the index std computes from them, as the example prints it.
pub(crate) fn inverted_index_input(input: &Path) -> Vec<String> {
    std::fs::create_dir_all(input).expect("docs dir");
    // 300 documents over 3 files; words repeat within and across documents.
    let mut expected: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for file in 0..3 {
        let mut text = String::new();
        for doc in 0..100 {
            let id = format!("d{file}-{doc:03}");
            let words: Vec<String> = (0..8)
                .map(|w| format!("{}W{}", ["", "x"][w % 2], (doc * 7 + w * 13 + file) % 41))
                .collect();
            text.push_str(&format!("{id}\t{}\n", words.join("  ")));
            for word in words {
                expected
                    .entry(word.to_lowercase())
                    .or_default()
                    .push(id.clone());
            }
        }
        std::fs::write(input.join(format!("part-{file}.tsv")), text).expect("write docs");
    }
    expected
        .into_iter()
        .map(|(word, mut docs)| {
            docs.sort();
            docs.dedup();
            format!("{word}\t{}", docs.join(","))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn text_ranges_read_every_line_once() {
    let temp = tempfile::tempdir().expect("temp");
    let input = temp.path().join("text");
    write_text(&input);
    let mut expected = Vec::new();
    let mut files: Vec<_> = std::fs::read_dir(&input)
        .expect("dir")
        .map(|e| e.expect("entry").path())
        .collect();
    files.sort();
    for file in files {
        expected.extend(
            std::fs::read_to_string(file)
                .expect("read")
                .lines()
                .map(str::to_string),
        );
    }
    for partitions in [1, 2, 5, 16] {
        let mut lines = context(partitions)
            .read_text(&[&input])
            .collect()
            .await
            .expect("lines");
        lines.sort();
        let mut sorted = expected.clone();
        sorted.sort();
        assert_eq!(lines, sorted, "{partitions} partitions");
    }
    // The same folder named as a file:// URL, and a missing one named.
    let url = std::path::PathBuf::from(format!("file://{}", input.display()));
    let mut lines = context(3)
        .read_text(&[&url])
        .collect()
        .await
        .expect("lines");
    lines.sort();
    expected.sort();
    assert_eq!(lines, expected);
    let missing = temp.path().join("no-such-folder");
    let error = context(2)
        .read_text(&[&missing])
        .collect()
        .await
        .expect_err("nothing to read");
    assert!(error.is_user_error(), "{error}");
    assert!(error.to_string().contains("no-such-folder"), "{error}");
}

#[tokio::test(flavor = "multi_thread")]
async fn terasort_sorts_and_keeps_every_record() {
    let temp = tempfile::tempdir().expect("temp");
    let input = temp.path().join("input");
    let output = temp.path().join("output");
    let expected = terasort::generate(&input, 20_000, 3).expect("generate");
    let ctx = context(4);
    let written = terasort::sort(&ctx, &input, &output).await.expect("sort");
    assert_eq!(written, 20_000);
    let (found, sorted) = terasort::validate(&output).expect("validate");
    assert!(sorted, "output is not sorted");
    assert_eq!(found, expected);
}

/// The sort of `sort_by` runs in the engine's memory pool: under a limit
/// far below its data it spills to disk and stays exact. (Before, each
/// range was decoded into Rust values outside the pool: the same job
/// exhausted the limit in the final merge.)
#[tokio::test(flavor = "multi_thread")]
async fn terasort_spills_under_a_memory_limit_and_keeps_every_record() {
    let temp = tempfile::tempdir().expect("temp");
    let input = temp.path().join("input");
    let output = temp.path().join("output");
    // 30 MB of records (40 MB routed, with their ranges and key bytes); 2
    // sorts share a 64 MiB limit's 48 MiB pool.
    let expected = terasort::generate(&input, 300_000, 4).expect("generate");
    let ctx = Context::local_with(EngineConfig {
        partitions: 2,
        memory_limit_bytes: Some(64 * 1024 * 1024),
        ..EngineConfig::default()
    })
    .expect("embedded context");
    let written = terasort::sort(&ctx, &input, &output).await.expect("sort");
    assert_eq!(written, 300_000);
    let (found, sorted) = terasort::validate(&output).expect("validate");
    assert!(sorted, "output is not sorted");
    assert_eq!(found, expected);
    let engine = ctx.engine().expect("embedded");
    assert!(
        engine.operator_spills().spilled_bytes() > 0,
        "the sort did not spill"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn typed_join_matches_std() {
    let (customers, orders) = typed_join::generate(200);
    let names: HashMap<u64, String> = customers.iter().map(|c| (c.id, c.name.clone())).collect();
    let mut expected: HashMap<String, u64> = HashMap::new();
    for order in &orders {
        *expected.entry(names[&order.customer].clone()).or_insert(0) += order.cents;
    }
    let with_orders: HashSet<u64> = orders.iter().map(|order| order.customer).collect();
    let mut lonely: Vec<String> = customers
        .iter()
        .filter(|c| !with_orders.contains(&c.id))
        .map(|c| c.name.clone())
        .collect();
    lonely.sort();

    let ctx = context(3);
    let found: HashMap<String, u64> = typed_join::totals(&ctx, customers.clone(), orders.clone())
        .collect()
        .await
        .expect("join")
        .into_iter()
        .collect();
    assert_eq!(found, expected);
    let mut found_lonely = typed_join::without_orders(&ctx, customers, orders)
        .collect()
        .await
        .expect("left join");
    found_lonely.sort();
    assert_eq!(found_lonely, lonely);
    assert_eq!(found_lonely.len(), 50);
}

/// PageRank against plain std (the example's own `pagerank_plain`).
#[tokio::test(flavor = "multi_thread")]
async fn pagerank_matches_std() {
    let edges = pagerank::graph(300);
    let ranks = pagerank::pagerank_plain(&edges);
    let found = pagerank::pagerank(&context(2), edges)
        .await
        .expect("pagerank");
    assert_eq!(found.len(), ranks.len());
    for (page, rank) in found {
        let expected = ranks[&page];
        assert!(
            (rank - expected).abs() < 1e-9,
            "page {page}: {rank} vs {expected}"
        );
    }
}

/// The examples' own checks, as a user runs them: `pagerank --check`
/// compares every rank with plain Rust, and `terasort --memory-limit`
/// runs under that limit (one too small to sort in names itself).
#[test]
fn the_pagerank_check_and_the_terasort_limit_work_from_the_command_line() {
    let checked = std::process::Command::new(crate::spmd::example("pagerank"))
        .args(["--pages", "300", "--check"])
        .env_remove("TONE_MASTER")
        .output()
        .expect("pagerank runs");
    let stdout = String::from_utf8_lossy(&checked.stdout);
    assert!(
        checked.status.success() && stdout.contains("; MATCH"),
        "{stdout}"
    );
    let temp = tempfile::tempdir().expect("temp");
    let limited = std::process::Command::new(crate::spmd::example("terasort"))
        .args(["--bytes", "8M", "--memory-limit", "8M", "--dir"])
        .arg(temp.path())
        .env_remove("TONE_MASTER")
        .output()
        .expect("terasort runs");
    let stderr = String::from_utf8_lossy(&limited.stderr);
    assert!(
        !limited.status.success() && stderr.contains("memory limit of 8.0 MiB"),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn narrow_transforms_and_actions() {
    let ctx = context(3);
    let numbers: Vec<u64> = (0..1000).collect();
    let data = ctx.parallelize(numbers.clone());
    let mapped = data
        .clone()
        .map(|n| n * 2)
        .filter(|n| n % 3 == 0)
        .flat_map(|n| vec![n, n + 1]);
    let mut found = mapped.clone().collect().await.expect("collect");
    found.sort();
    let mut expected: Vec<u64> = numbers
        .iter()
        .map(|n| n * 2)
        .filter(|n| n % 3 == 0)
        .flat_map(|n| vec![n, n + 1])
        .collect();
    expected.sort();
    assert_eq!(found, expected);
    assert_eq!(
        mapped.clone().count().await.expect("count"),
        expected.len() as u64
    );
    let taken = mapped.take(7).await.expect("take");
    assert_eq!(taken.len(), 7);
    assert!(taken.iter().all(|n| expected.contains(n)));

    // map_partitions sees whole partitions: one sum per partition.
    let sums = data
        .clone()
        .map_partitions(|rows| vec![rows.iter().sum::<u64>()])
        .collect()
        .await
        .expect("partitions");
    assert_eq!(sums.len(), 3);
    assert_eq!(sums.iter().sum::<u64>(), numbers.iter().sum::<u64>());

    let keyed = data
        .clone()
        .key_by(|n| n % 10)
        .collect()
        .await
        .expect("key_by");
    assert!(keyed.iter().all(|(key, n)| *key == n % 10));

    let mut union = data
        .clone()
        .union(ctx.parallelize(vec![5000u64, 5001]))
        .collect()
        .await
        .expect("union");
    union.sort();
    assert_eq!(union.len(), 1002);
    assert_eq!(union.last(), Some(&5001));

    let mut distinct = data
        .clone()
        .map(|n| n % 17)
        .distinct()
        .collect()
        .await
        .expect("distinct");
    distinct.sort();
    assert_eq!(distinct, (0..17).collect::<Vec<u64>>());

    let repartitioned = data.repartition(5);
    assert_eq!(repartitioned.count().await.expect("count"), 1000);
}

#[tokio::test(flavor = "multi_thread")]
async fn keyed_operations() {
    let ctx = context(3);
    let pairs: Vec<(String, i64)> = (0..600).map(|n| (format!("k{}", n % 13), n)).collect();
    let mut expected_groups: BTreeMap<String, Vec<i64>> = BTreeMap::new();
    for (key, value) in &pairs {
        expected_groups.entry(key.clone()).or_default().push(*value);
    }
    let groups: BTreeMap<String, Vec<i64>> = ctx
        .parallelize(pairs.clone())
        .group_by_key()
        .collect()
        .await
        .expect("group")
        .into_iter()
        .map(|(key, mut values)| {
            values.sort();
            (key, values)
        })
        .collect();
    assert_eq!(groups, expected_groups);

    // (sum, count) per key.
    let aggregated: BTreeMap<String, (i64, u64)> = ctx
        .parallelize(pairs.clone())
        .aggregate_by_key(
            (0i64, 0u64),
            |(sum, count), value| (sum + value, count + 1),
            |a, b| (a.0 + b.0, a.1 + b.1),
        )
        .collect()
        .await
        .expect("aggregate")
        .into_iter()
        .collect();
    for (key, values) in &expected_groups {
        assert_eq!(aggregated[key], (values.iter().sum(), values.len() as u64));
    }

    let left = ctx.parallelize(vec![
        (1u32, "a".to_string()),
        (2, "b".into()),
        (3, "c".into()),
    ]);
    let right = ctx.parallelize(vec![(1u32, 10u8), (1, 11), (3, 30), (4, 40)]);
    let mut joined = left
        .clone()
        .join(right.clone())
        .collect()
        .await
        .expect("join");
    joined.sort();
    assert_eq!(
        joined,
        vec![
            (1, ("a".to_string(), 10)),
            (1, ("a".to_string(), 11)),
            (3, ("c".to_string(), 30))
        ]
    );
    let mut outer = left.left_join(right).collect().await.expect("left join");
    outer.sort();
    assert_eq!(
        outer,
        vec![
            (1, ("a".to_string(), Some(10))),
            (1, ("a".to_string(), Some(11))),
            (2, ("b".to_string(), None)),
            (3, ("c".to_string(), Some(30))),
        ]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn reduce_by_key_combines_before_the_shuffle() {
    let ctx = context(4);
    let engine = ctx.engine().expect("embedded");
    let rows: Vec<(u32, u64)> = (0..20_000).map(|n| (n % 10, 1)).collect();
    let before = engine.operator_spills().shuffle_rows_written();
    let mut counts = ctx
        .parallelize(rows)
        .reduce_by_key(|a, b| a + b)
        .collect()
        .await
        .expect("reduce");
    let shuffled = engine.operator_spills().shuffle_rows_written() - before;
    counts.sort();
    assert_eq!(counts, (0..10).map(|key| (key, 2000)).collect::<Vec<_>>());
    // At most one row per key and map task crosses the shuffle.
    assert!(
        shuffled <= 4 * 10,
        "{shuffled} rows shuffled for 20000 input rows"
    );
    assert!(shuffled > 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn sort_by_is_a_total_order_across_partitions() {
    let ctx = context(4);
    let mut state = 7u64;
    let values: Vec<(u64, String)> = (0..5000)
        .map(|n| {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (state >> 40, format!("row{n}"))
        })
        .collect();
    let sorted = ctx
        .parallelize(values.clone())
        .sort_by(|(key, _)| *key)
        .collect()
        .await
        .expect("sort");
    assert_eq!(sorted.len(), values.len());
    assert!(
        sorted.windows(2).all(|pair| pair[0].0 <= pair[1].0),
        "not sorted"
    );
    let mut expected = values;
    expected.sort_by_key(|(key, _)| *key);
    let keys: Vec<u64> = sorted.iter().map(|(key, _)| *key).collect();
    assert_eq!(
        keys,
        expected.iter().map(|(key, _)| *key).collect::<Vec<_>>()
    );
    // Descending through a key transform, with many equal keys.
    let down = ctx
        .parallelize((0..1000u64).collect())
        .sort_by(|n| std::cmp::Reverse(n % 50))
        .collect()
        .await
        .expect("sort");
    // The same keys in the order std's sort gives, and every row once.
    let mut expected: Vec<u64> = (0..1000).collect();
    expected.sort_by_key(|n| std::cmp::Reverse(n % 50));
    let keys = |rows: &[u64]| rows.iter().map(|n| n % 50).collect::<Vec<_>>();
    assert_eq!(keys(&down), keys(&expected));
    let mut rows = down.clone();
    rows.sort_unstable();
    assert_eq!(rows, (0..1000).collect::<Vec<_>>());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_panicking_closure_fails_the_job_with_its_message() {
    let ctx = context(2);
    let error = ctx
        .parallelize((0..100u32).collect())
        .map(|n| {
            if n == 42 {
                panic!("bad row {n}");
            }
            n
        })
        .collect()
        .await
        .expect_err("the closure panics");
    let message = error.to_string();
    assert!(message.contains("bad row 42"), "{message}");
    assert!(message.contains("map@"), "{message}");
    // The context still runs jobs.
    assert_eq!(
        ctx.parallelize(vec![1u8, 2, 3])
            .count()
            .await
            .expect("count"),
        3
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn writes_read_back() {
    #[derive(serde::Serialize, serde::Deserialize, Debug, PartialEq, Clone)]
    struct Row {
        name: String,
        value: i64,
    }
    let temp = tempfile::tempdir().expect("temp");
    let ctx = context(2);
    let rows: Vec<Row> = (0..50)
        .map(|n| Row {
            name: format!("n{n}"),
            value: n,
        })
        .collect();
    let csv = temp.path().join("csv");
    assert_eq!(
        ctx.parallelize(rows.clone())
            .write_csv(&csv)
            .await
            .expect("csv"),
        50
    );
    let parquet = temp.path().join("parquet");
    assert_eq!(
        ctx.parallelize(rows.clone())
            .write_parquet(&parquet)
            .await
            .expect("parquet"),
        50
    );
    let text = temp.path().join("text");
    assert_eq!(
        ctx.parallelize((0..50i64).collect())
            .save_as_text(&text)
            .await
            .expect("text"),
        50
    );

    // Read back through DataFrames and typed rows.
    let mut back: Vec<Row> = ctx
        .read_parquet(&parquet)
        .await
        .expect("read parquet")
        .into_dataset::<Row>()
        .await
        .expect("typed")
        .collect()
        .await
        .expect("collect");
    back.sort_by_key(|row| row.value);
    assert_eq!(back, rows);
    let mut from_csv: Vec<Row> = ctx
        .read_csv(&csv)
        .await
        .expect("read csv")
        .into_dataset::<Row>()
        .await
        .expect("typed")
        .collect()
        .await
        .expect("collect");
    from_csv.sort_by_key(|row| row.value);
    assert_eq!(from_csv, rows);
    // The files themselves, read with std: a header per part, each row once.
    let mut lines = Vec::new();
    for entry in std::fs::read_dir(&csv).expect("csv folder") {
        let path = entry.expect("entry").path();
        let name = path
            .file_name()
            .and_then(|name| name.to_str())
            .unwrap_or_default();
        if name.starts_with("part-") {
            let text = std::fs::read_to_string(&path).expect("part");
            let mut part = text.lines();
            assert_eq!(part.next(), Some("name,value"), "{name}");
            lines.extend(part.map(str::to_string));
        }
    }
    lines.sort();
    let mut expected: Vec<String> = rows
        .iter()
        .map(|row| format!("{},{}", row.name, row.value))
        .collect();
    expected.sort();
    assert_eq!(lines, expected);
    let mut lines: Vec<i64> = ctx
        .read_text(&[&text])
        .map(|line| line.parse::<i64>().unwrap_or(-1))
        .collect()
        .await
        .expect("lines");
    lines.sort();
    assert_eq!(lines, (0..50).collect::<Vec<_>>());
}

#[path = "../examples/tpch_dataframe.rs"]
#[allow(dead_code)]
pub(crate) mod tpch_dataframe;

/// Rows as text, for comparing two results of the same query.
pub(crate) fn rows_text(batches: &[arrow::array::RecordBatch]) -> Vec<String> {
    let text = arrow::util::pretty::pretty_format_batches(batches)
        .expect("format")
        .to_string();
    text.lines()
        .filter(|line| line.starts_with("| "))
        .skip(1)
        .map(str::to_string)
        .collect()
}

/// Q1 and Q3 as DataFrames give plain DataFusion's answers to the TPC-H
/// query texts, every column and row.
#[tokio::test(flavor = "multi_thread")]
async fn tpch_dataframe_matches_sql() {
    let data = crate::common::tpch_data();
    let ctx = context(2);
    let oracle = datafusion::prelude::SessionContext::new();
    for table in ["lineitem", "orders", "customer"] {
        let path = data.join(table);
        let path = path.to_str().expect("utf-8");
        oracle
            .register_parquet(table, path, Default::default())
            .await
            .expect("oracle registers");
    }
    let queries = crate::common::tpch_queries();
    let text = |name: &str| {
        let (_, sql) = queries
            .iter()
            .find(|(query, _)| query == name)
            .expect("query text");
        sql.clone()
    };
    for (name, frame) in [
        ("q01", tpch_dataframe::q1(&ctx, data).await.expect("q1")),
        ("q03", tpch_dataframe::q3(&ctx, data).await.expect("q3")),
    ] {
        let sql = text(name);
        let expected = oracle
            .sql(&sql)
            .await
            .expect("oracle plans")
            .collect()
            .await
            .expect("oracle runs");
        assert!(!rows_text(&expected).is_empty(), "{name} has rows");
        crate::common::compare::same_answer(&sql, &expected, &frame)
            .unwrap_or_else(|error| panic!("{name}: {error}"));
    }
}
