-- Queries that once gave tone a wrong plan or answer, each run against
-- plain DataFusion at 1, 2 and 7 partitions, embedded and on a cluster
-- (tests/sql_regressions.rs). Found by users or by the generator
-- (tests/sqlgen), minimised.

-- name: window_over_a_sort_preserving_exchange_with_a_constant_key
-- A filter on yr below the window made yr constant; the sort tone put
-- over the exchange's reader dropped it, and the window asserted.
with v1 as (
  select n_name, r_name, c_mktsegment, yr, mo, sum(o_totalprice) sum_p,
    avg(sum(o_totalprice)) over (partition by n_name, r_name, c_mktsegment, yr) avg_p,
    rank() over (partition by n_name, r_name, c_mktsegment order by yr, mo) rn
  from (select n_name, r_name, c_mktsegment, o_totalprice,
               extract(year from o_orderdate) yr, extract(month from o_orderdate) mo
        from customer join orders on c_custkey = o_custkey
                      join nation on c_nationkey = n_nationkey
                      join region on n_regionkey = r_regionkey) t
  group by 1, 2, 3, 4, 5),
v2 as (
  select v1.n_name, v1.r_name, v1.c_mktsegment, v1.yr, v1.mo, v1.avg_p, v1.sum_p,
         lag.sum_p psum, lead.sum_p nsum
  from v1, v1 lag, v1 lead
  where v1.n_name = lag.n_name and v1.n_name = lead.n_name
    and v1.r_name = lag.r_name and v1.r_name = lead.r_name
    and v1.c_mktsegment = lag.c_mktsegment and v1.c_mktsegment = lead.c_mktsegment
    and v1.rn = lag.rn + 1 and v1.rn = lead.rn - 1)
select * from v2 where yr = 1995 order by sum_p - avg_p, 1, 2, 3, 4, 5 limit 10;

-- name: window_over_an_exchange_below_a_filter_made_constant_by_statistics
-- Found by the generator (seed 62). From the file statistics the filter
-- makes r_regionkey constant, so DataFusion sorts for the window on two of
-- its three keys. Rebuilding the filter over a reader (no statistics) lost
-- the constant, the exchange above it lost it too, and so did the reader
-- that stood in for that exchange: the stage failed its plan check.
select r_name,
       max(r_name) over (partition by r_regionkey, r_name
                         order by r_comment desc, r_comment desc nulls last) m
from region
where r_regionkey < 1;

-- name: window_ordering_satisfied_by_a_unique_group_key_across_an_exchange
-- Found by the generator (seed 668). The group key o_orderpriority is
-- unique after the aggregate, so DataFusion needs no sort for the second
-- window: a unique prefix satisfies any longer ordering. Readers lost that
-- key (constraints did not travel), and the decoded stage failed its check.
select o_orderpriority, count(*) c,
  row_number() over (order by o_orderpriority desc) rn,
  count(*) over (partition by o_orderpriority order by count(*) desc) w
from orders group by o_orderpriority;

-- name: rollup_over_a_key_held_constant_by_a_filter
-- Found by the generator (seed 1804). DataFusion 55 keeps c_custkey
-- constant through the rollup, though the grand-total row makes it NULL.
-- A final aggregate rebuilt over the reader took the key as sorted,
-- emitted groups early and gave an extra grand-total row at 2 partitions.
select c_custkey, count(*) c, avg(c_acctbal) a
from customer
where c_custkey = 1
group by rollup(c_custkey);

-- name: scalar_subquery_held_constant_by_a_filter_across_an_exchange
-- Found by the generator (seeds 3210, 10316 and 7 more). The filter makes
-- the subquery's value a constant of the rows, so the reader over the
-- window's exchange carried the subquery expression in its properties.
-- That expression was encoded as an unresolved subquery, not as its value,
-- and the stage failed to decode at 2 partitions and on the cluster.
select n_name, rank() over (partition by n_regionkey order by n_name) r
from nation
where (select max(l_orderkey) from lineitem) = 600000;

-- name: union_of_broadcast_semi_joins_whose_partitions_wait_for_each_other
-- Embedded once ran a stage's tasks a few at a time: a union's two
-- broadcast joins each wait, for their dynamic filter, for all their
-- partitions, and with half of each running the stage never finished.
with c as (select case when t1.p_size is distinct from case when case when t1.p_retailprice between least(1917.33, 1336.73) and greatest(1917.33, 1336.73) then t1.p_partkey end is not null then t1.p_size end then nullif(t1.p_container, 'Brand#34') else coalesce(t1.p_type, 'carefully') end as c0, t1.p_mfgr as c1, t1.p_size as c2 from part t1 where (not not exists (select 1 from partsupp s2 where s2.ps_partkey = t1.p_partkey))) select c0, c1, c2 from c union all select c0, c1, c2 from c where (not c.c1 > 'deposit') order by 1, 2, 3;
