//! Keyed operations on `Dataset<(K, V)>`: a map side, a hash shuffle on the
//! `key` column, a reduce side that folds each key's values in a hash table.

use std::panic::Location;
use std::sync::Arc;

use arrow::array::RecordBatch;
use datafusion::physical_expr::expressions::Column;
use datafusion::physical_plan::repartition::RepartitionExec;
use datafusion::physical_plan::union::UnionExec;
use datafusion::physical_plan::{ExecutionPlan, Partitioning};
use futures::FutureExt;

use super::functions::{Emit, FoldFn, MapFn, Pipe};
use super::rows::{decode_rows, Data, Key, Layout, Pair, Tagged, KEY_COLUMN};
use super::{call_name, closure_plan, items_emit, then, Dataset, PlanThunk};

/// A hash shuffle of `input` on its first column, `key`.
fn hash_on_key(input: PlanThunk, partitions: usize) -> PlanThunk {
    then(input, move |plan| {
        let key = Arc::new(Column::new(KEY_COLUMN, 0));
        let shuffled: Arc<dyn ExecutionPlan> = Arc::new(RepartitionExec::try_new(
            plan,
            Partitioning::Hash(vec![key], partitions.max(1)),
        )?);
        Ok(shuffled)
    })
}

fn pair_emit<K: Key, U: Data>(layout: Layout) -> Emit<(K, U)> {
    Arc::new(move |rows: Vec<(K, U)>| {
        let pairs: Vec<Pair<K, U>> = rows
            .into_iter()
            .map(|(key, value)| Pair { key, value })
            .collect();
        layout.encode_rows(&pairs)
    })
}

fn pair_pipe<K: Key, U: Data>() -> Pipe<(K, U)> {
    Arc::new(|batch: &RecordBatch| {
        let pairs: Vec<Pair<K, U>> = decode_rows(batch)?;
        Ok(pairs
            .into_iter()
            .map(|pair| (pair.key, pair.value))
            .collect())
    })
}

type Fold<I, U> = Arc<dyn Fn(Option<U>, I) -> U + Send + Sync>;

/// What the map side of a keyed shuffle does with each task's values.
enum MapSide<V, U> {
    /// Folds them per key before the shuffle (one row per key and task).
    Combine(Fold<V, U>),
    /// Converts each one and shuffles every row.
    Convert(Arc<dyn Fn(V) -> U + Send + Sync>),
}

impl<K: Key, V: Data> Dataset<(K, V)> {
    /// Map side `map_fold` (or no combine when `None`), shuffle by key,
    /// reduce side `reduce_fold`.
    fn shuffle_fold<U: Data>(
        self,
        name: String,
        map_side: MapSide<V, U>,
        reduce_fold: Fold<U, U>,
    ) -> Dataset<(K, U)> {
        let (pairs, output) = match (Layout::rows::<Pair<K, U>>(), Layout::items::<(K, U)>()) {
            (Ok(pairs), Ok(output)) => (pairs, output),
            (Err(error), _) | (_, Err(error)) => return self.broken(error),
        };
        let map_side = match map_side {
            MapSide::Combine(fold) => self.register(
                &format!("{name}:combine"),
                Arc::clone(&pairs.schema),
                Arc::new(FoldFn {
                    pipe: Arc::clone(&self.pipe),
                    fold,
                    emit: pair_emit::<K, U>(pairs.clone()),
                }),
            ),
            MapSide::Convert(convert) => {
                let pipe = Arc::clone(&self.pipe);
                self.register(
                    &format!("{name}:pairs"),
                    Arc::clone(&pairs.schema),
                    Arc::new(MapFn {
                        pipe: Arc::new(move |batch: &RecordBatch| {
                            Ok(pipe(batch)?
                                .into_iter()
                                .map(|(key, value)| (key, convert(value)))
                                .collect())
                        }),
                        emit: pair_emit::<K, U>(pairs.clone()),
                    }),
                )
            }
        };
        let map_plan = closure_plan(
            Arc::clone(&self.plan),
            map_side.0,
            map_side.1,
            Vec::new(),
            None,
        );
        let shuffled = hash_on_key(map_plan, self.ctx.partitions());
        let reduce = FoldFn {
            pipe: pair_pipe::<K, U>(),
            fold: reduce_fold,
            emit: items_emit::<(K, U)>(output.clone()),
        };
        let reduced = Dataset::<(K, U)> {
            ctx: self.ctx.clone(),
            plan: shuffled,
            pipe: pair_pipe::<K, U>(),
            plain: false,
            fused: vec![format!("{name}:shuffle")],
        };
        let (id, entry) =
            reduced.register(&format!("{name}:reduce"), output.schema, Arc::new(reduce));
        let plan = closure_plan(Arc::clone(&reduced.plan), id, entry, Vec::new(), None);
        Dataset {
            ctx: self.ctx,
            plan,
            pipe: super::items_pipe(),
            plain: true,
            fused: vec![name],
        }
    }

    /// Merges each key's values with `f`, first within each map task (the
    /// combine, so one row per key and task is shuffled) and then across
    /// tasks after the shuffle.
    #[track_caller]
    pub fn reduce_by_key(self, f: impl Fn(V, V) -> V + Send + Sync + 'static) -> Dataset<(K, V)> {
        let name = call_name("reduce_by_key", Location::caller());
        let f = Arc::new(f);
        let combine = Arc::clone(&f);
        let fold: Fold<V, V> = Arc::new(move |previous, value| match previous {
            Some(previous) => combine(previous, value),
            None => value,
        });
        self.shuffle_fold(name, MapSide::Combine(Arc::clone(&fold)), fold)
    }

    /// Folds each key's values into an accumulator that starts at `zero`:
    /// `seq` adds a value (map side), `combine` merges two accumulators
    /// (reduce side).
    #[track_caller]
    pub fn aggregate_by_key<U: Data + Clone>(
        self,
        zero: U,
        seq: impl Fn(U, V) -> U + Send + Sync + 'static,
        combine: impl Fn(U, U) -> U + Send + Sync + 'static,
    ) -> Dataset<(K, U)> {
        let name = call_name("aggregate_by_key", Location::caller());
        let map_fold: Fold<V, U> =
            Arc::new(move |previous, value| seq(previous.unwrap_or_else(|| zero.clone()), value));
        let reduce_fold: Fold<U, U> = Arc::new(move |previous, value| match previous {
            Some(previous) => combine(previous, value),
            None => value,
        });
        self.shuffle_fold(name, MapSide::Combine(map_fold), reduce_fold)
    }

    /// Gathers each key's values into one list (no map-side combine).
    #[track_caller]
    pub fn group_by_key(self) -> Dataset<(K, Vec<V>)> {
        let name = call_name("group_by_key", Location::caller());
        let fold: Fold<Vec<V>, Vec<V>> = Arc::new(|previous, mut values| match previous {
            Some(mut previous) => {
                previous.append(&mut values);
                previous
            }
            None => values,
        });
        self.shuffle_fold(name, MapSide::Convert(Arc::new(|value| vec![value])), fold)
    }

    /// For each key in either dataset, the values of both.
    #[track_caller]
    pub fn cogroup<W: Data>(self, other: Dataset<(K, W)>) -> Dataset<(K, (Vec<V>, Vec<W>))> {
        let name = call_name("cogroup", Location::caller());
        let (tagged, output) = match (
            Layout::rows::<Tagged<K, V, W>>(),
            Layout::items::<(K, (Vec<V>, Vec<W>))>(),
        ) {
            (Ok(tagged), Ok(output)) => (tagged, output),
            (Err(error), _) | (_, Err(error)) => return self.broken(error),
        };
        let left = tag_side::<K, V, V, W>(&self, &name, &tagged, |key, value| Tagged {
            key,
            left: Some(value),
            right: None,
        });
        let right = tag_side::<K, W, V, W>(&other, &name, &tagged, |key, value| Tagged {
            key,
            left: None,
            right: Some(value),
        });
        let union: PlanThunk = Arc::new(move || {
            let left = Arc::clone(&left);
            let right = Arc::clone(&right);
            async move { Ok(UnionExec::try_new(vec![left().await?, right().await?])?) }.boxed()
        });
        let shuffled = hash_on_key(union, self.ctx.partitions());
        let pipe: Pipe<(K, (Vec<V>, Vec<W>))> = Arc::new(|batch: &RecordBatch| {
            let rows: Vec<Tagged<K, V, W>> = decode_rows(batch)?;
            Ok(rows
                .into_iter()
                .map(|row| {
                    let left = row.left.into_iter().collect();
                    let right = row.right.into_iter().collect();
                    (row.key, (left, right))
                })
                .collect())
        });
        let fold: Fold<(Vec<V>, Vec<W>), (Vec<V>, Vec<W>)> =
            Arc::new(|previous, (mut left, mut right)| match previous {
                Some((mut all_left, mut all_right)) => {
                    all_left.append(&mut left);
                    all_right.append(&mut right);
                    (all_left, all_right)
                }
                None => (left, right),
            });
        let reduce = FoldFn {
            pipe,
            fold,
            emit: items_emit::<(K, (Vec<V>, Vec<W>))>(output.clone()),
        };
        let (id, entry) = self.register(&format!("{name}:reduce"), output.schema, Arc::new(reduce));
        let plan = closure_plan(shuffled, id, entry, Vec::new(), None);
        Dataset {
            ctx: self.ctx,
            plan,
            pipe: super::items_pipe(),
            plain: true,
            fused: vec![name],
        }
    }

    /// Inner join on the key: every pair of values with equal keys.
    #[track_caller]
    pub fn join<W: Data + Clone>(self, other: Dataset<(K, W)>) -> Dataset<(K, (V, W))>
    where
        V: Clone,
    {
        self.cogroup(other).flat_map(|(key, (left, right))| {
            let mut joined = Vec::with_capacity(left.len() * right.len());
            for value in &left {
                for other in &right {
                    joined.push((key.clone(), (value.clone(), other.clone())));
                }
            }
            joined
        })
    }

    /// Left outer join: every left row, with `None` when the key has no
    /// right row.
    #[track_caller]
    pub fn left_join<W: Data + Clone>(self, other: Dataset<(K, W)>) -> Dataset<(K, (V, Option<W>))>
    where
        V: Clone,
    {
        self.cogroup(other).flat_map(|(key, (left, right))| {
            let mut joined = Vec::new();
            for value in left {
                if right.is_empty() {
                    joined.push((key.clone(), (value, None)));
                    continue;
                }
                for other in &right {
                    joined.push((key.clone(), (value.clone(), Some(other.clone()))));
                }
            }
            joined
        })
    }
}

/// Registers one side of a cogroup: its rows as [`Tagged`] rows.
fn tag_side<K: Key, X: Data, V: Data, W: Data>(
    side: &Dataset<(K, X)>,
    name: &str,
    layout: &Layout,
    tag: fn(K, X) -> Tagged<K, V, W>,
) -> PlanThunk {
    let pipe = Arc::clone(&side.pipe);
    let emit_layout = layout.clone();
    let function = MapFn::<Tagged<K, V, W>> {
        pipe: Arc::new(move |batch: &RecordBatch| {
            Ok(pipe(batch)?
                .into_iter()
                .map(|(key, value)| tag(key, value))
                .collect())
        }),
        emit: Arc::new(move |rows: Vec<Tagged<K, V, W>>| emit_layout.encode_rows(&rows)),
    };
    let (id, entry) = side.register(
        &format!("{name}:side"),
        Arc::clone(&layout.schema),
        Arc::new(function),
    );
    closure_plan(Arc::clone(&side.plan), id, entry, Vec::new(), None)
}

impl<T: Key> Dataset<T> {
    /// Each distinct row once (deduplicated per task before the shuffle).
    #[track_caller]
    pub fn distinct(self) -> Dataset<T> {
        self.map(|row| (row, 0u8))
            .reduce_by_key(|kept, _| kept)
            .map(|(row, _)| row)
    }
}
