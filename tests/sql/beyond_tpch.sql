-- SQL beyond the TPC-H texts, over the TPC-H tables. Each query is compared
-- with DataFusion's single-process answer. Queries are separated by a
-- "-- name:" line.

-- name: window_rank_per_group
select n_regionkey, n_name,
       rank() over (partition by n_regionkey order by n_name) as r,
       count(*) over (partition by n_regionkey) as in_region
from nation order by n_regionkey, n_name;

-- name: window_running_sum_and_lag
select o_custkey, o_orderkey, o_totalprice,
       sum(o_totalprice) over (partition by o_custkey order by o_orderkey
                               rows between unbounded preceding and current row) as running,
       lag(o_orderkey) over (partition by o_custkey order by o_orderkey) as previous_order,
       lead(o_orderkey, 2) over (partition by o_custkey order by o_orderkey) as next_next
from orders where o_custkey < 200 order by o_custkey, o_orderkey;

-- name: window_row_number_top_n
select * from (
  select c_nationkey, c_custkey, c_acctbal,
         row_number() over (partition by c_nationkey order by c_acctbal desc, c_custkey) as position
  from customer
) ranked where position <= 3 order by c_nationkey, position;

-- name: window_without_partition
select s_suppkey, s_acctbal,
       dense_rank() over (order by s_nationkey) as nation_rank,
       ntile(4) over (order by s_suppkey) as quartile
from supplier order by s_suppkey;

-- name: rollup
select l_returnflag, l_linestatus, count(*) as lines, sum(l_quantity) as quantity
from lineitem group by rollup (l_returnflag, l_linestatus)
order by l_returnflag nulls last, l_linestatus nulls last;

-- name: cube_with_grouping
select o_orderstatus, o_orderpriority, grouping(o_orderstatus) as g, count(*) as orders
from orders group by cube (o_orderstatus, o_orderpriority);

-- name: grouping_sets
select n_regionkey, n_nationkey % 3 as bucket, count(*) as nations
from nation group by grouping sets ((n_regionkey), (n_nationkey % 3), ());

-- name: left_outer_join_with_unmatched
select c_custkey, count(o_orderkey) as orders
from customer left join orders on c_custkey = o_custkey
group by c_custkey order by orders, c_custkey limit 40;

-- name: right_outer_join
select n_name, s_suppkey
from supplier right join nation on s_nationkey = n_nationkey and s_acctbal > 9900
order by n_name, s_suppkey;

-- name: full_outer_join
select a.n_nationkey as left_key, b.r_regionkey as right_key
from (select * from nation where n_nationkey < 8) a
full outer join (select * from region where r_regionkey > 1) b on a.n_nationkey = b.r_regionkey;

-- name: semi_join_exists
select c_custkey, c_name from customer
where exists (select 1 from orders where o_custkey = c_custkey and o_totalprice > 400000)
order by c_custkey;

-- name: anti_join_not_exists
select count(*) as customers_without_orders from customer
where not exists (select 1 from orders where o_custkey = c_custkey);

-- name: not_in_subquery
select count(*) as parts from part
where p_partkey not in (select ps_partkey from partsupp where ps_availqty < 500);

-- name: in_subquery
select s_name from supplier
where s_nationkey in (select n_nationkey from nation where n_regionkey = 1)
order by s_name;

-- name: correlated_scalar_subquery_in_select
select o_orderkey,
       (select count(*) from lineitem where l_orderkey = o_orderkey) as line_count
from orders where o_orderkey < 200 order by o_orderkey;

-- name: correlated_subquery_in_where
select p_partkey, p_retailprice from part p1
where p_retailprice > (select avg(p_retailprice) * 1.5 from part p2 where p2.p_brand = p1.p_brand)
order by p_partkey;

-- name: uncorrelated_scalar_subquery
select count(*) as expensive_orders from orders
where o_totalprice > (select avg(o_totalprice) from orders);

-- name: union_distinct
select n_name as name from nation where n_regionkey = 0
union
select r_name from region
union
select n_name from nation where n_nationkey < 3;

-- name: union_all_then_aggregate
select source, count(*) as rows_in from (
  select 'orders' as source, o_orderkey as k from orders
  union all
  select 'lineitem', l_orderkey from lineitem
) t group by source;

-- name: intersect_and_except
select o_custkey from orders where o_orderpriority = '1-URGENT'
intersect
select c_custkey from customer where c_mktsegment = 'BUILDING'
except
select o_custkey from orders where o_orderstatus = 'F';

-- name: distinct_rows
select distinct l_shipmode, l_returnflag from lineitem;

-- name: count_distinct
select l_shipmode, count(distinct l_suppkey) as suppliers, count(distinct l_partkey) as parts
from lineitem group by l_shipmode;

-- name: median_and_stats
select o_orderpriority, median(o_totalprice) as median_price, min(o_totalprice) as lowest,
       max(o_totalprice) as highest, stddev(o_totalprice) as spread
from orders group by o_orderpriority;

-- name: having_and_case
select c_nationkey,
       sum(case when c_acctbal < 0 then 1 else 0 end) as in_debt,
       avg(c_acctbal) as mean_balance
from customer group by c_nationkey having count(*) > 50 order by c_nationkey;

-- name: cte_chain
with big_orders as (
  select o_orderkey, o_custkey from orders where o_totalprice > 300000
), per_customer as (
  select o_custkey, count(*) as n from big_orders group by o_custkey
)
select n, count(*) as customers from per_customer group by n order by n;

-- name: limit_offset_total_order
select l_orderkey, l_linenumber, l_extendedprice from lineitem
order by l_extendedprice desc, l_orderkey, l_linenumber limit 15 offset 10;

-- name: string_and_date_functions
select upper(substr(c_name, 1, 8)) as short_name, length(c_address) as address_length,
       date_trunc('month', o_orderdate) as month, extract(year from o_orderdate) as year
from customer join orders on c_custkey = o_custkey
where c_custkey < 30 and o_orderkey % 7 = 0;

-- name: like_and_nulls
select p_type, count(*) as parts, sum(case when p_comment like '%final%' then 1 else 0 end) as finals,
       count(nullif(p_size, 1)) as non_one_sizes
from part where p_type like 'PROMO%' group by p_type;

-- name: non_equi_join
select count(*) as pairs from supplier s
join nation n on s.s_nationkey < n.n_nationkey and n.n_regionkey = 2;

-- name: cross_join_small
select r_name, count(*) as nations from region cross join nation group by r_name;

-- name: values_and_join
select v.code, n_name from (values (1, 'a'), (5, 'b'), (24, 'c')) as v(key, code)
join nation on n_nationkey = v.key;

-- name: ordered_string_agg
select n_regionkey, string_agg(n_name, ',' order by n_name) as names
from nation group by n_regionkey;

-- name: first_value_last_value
select distinct n_regionkey,
       first_value(n_name) over (partition by n_regionkey order by n_name) as first_name,
       last_value(n_name) over (partition by n_regionkey order by n_name
                                rows between unbounded preceding and unbounded following) as last_name
from nation;

-- name: multi_key_join_and_aggregate
select ps_suppkey, count(*) as items, sum(l_quantity) as quantity
from partsupp join lineitem on ps_partkey = l_partkey and ps_suppkey = l_suppkey
group by ps_suppkey order by quantity desc, ps_suppkey limit 20;

-- name: recursive_cte
with recursive chain(n, total) as (
  select 1, cast(0 as bigint)
  union all
  select n + 1, total + n from chain where n < 20
)
select n, total from chain order by n;

-- name: recursive_cte_joined_to_a_table
with recursive keys(k) as (select 0 union all select k + 3 from keys where k < 21)
select n_name from nation join keys on n_nationkey = k order by n_name;

-- name: table_functions_and_unnest
select value * 2 as doubled, unnest([value, value + 100]) as spread
from generate_series(1, 4) order by doubled, spread;

-- name: scalar_subquery_in_projection_and_nested
select n_name,
       (select max(r_name) from region) as last_region,
       (select count(*) from supplier where s_acctbal > (select avg(s_acctbal) from supplier)) as rich
from nation where n_nationkey < 4 order by n_name;

-- name: non_equi_left_join_keeps_unmatched_rows
select n_name, count(s_suppkey) as richer_suppliers
from nation left join supplier on s_nationkey < n_nationkey and s_acctbal > 9950
group by n_name order by n_name;

-- name: non_equi_anti_join
select count(*) as lonely from part p
where not exists (select 1 from partsupp where ps_partkey = p.p_partkey and ps_supplycost > p.p_retailprice);
