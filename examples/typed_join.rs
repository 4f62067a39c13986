//! A join of two typed datasets: order totals per customer (inner join),
//! and customers without orders (left join).
//!
//! `cargo run --release --example typed_join -- [--customers N] [--master URL]`

use clap::Parser;
use serde::{Deserialize, Serialize};
use tone::{Context, Dataset};

#[path = "parts/context_flags.rs"]
mod context_flags;

/// Order totals per customer, and customers without orders.
#[derive(Debug, Parser)]
#[command(name = "typed_join")]
struct Args {
    /// Customers to generate
    #[arg(long, default_value_t = 1000)]
    customers: u64,
    #[command(flatten)]
    context: context_flags::ContextFlags,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Customer {
    pub id: u64,
    pub name: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Order {
    pub id: u64,
    pub customer: u64,
    pub cents: u64,
}

/// `customers` customers; customer `i` has `i % 4` orders (so a quarter
/// have none).
pub fn generate(customers: u64) -> (Vec<Customer>, Vec<Order>) {
    let people = (0..customers)
        .map(|id| Customer {
            id,
            name: format!("customer-{id}"),
        })
        .collect();
    let mut orders = Vec::new();
    for customer in 0..customers {
        for n in 0..customer % 4 {
            orders.push(Order {
                id: orders.len() as u64,
                customer,
                cents: 100 * (customer + 1) + n,
            });
        }
    }
    (people, orders)
}

/// Total cents per customer name, for customers with orders.
pub fn totals(
    ctx: &Context,
    customers: Vec<Customer>,
    orders: Vec<Order>,
) -> Dataset<(String, u64)> {
    let by_id = ctx.parallelize(customers).key_by(|customer| customer.id);
    let spent = ctx
        .parallelize(orders)
        .map(|order| (order.customer, order.cents))
        .reduce_by_key(|left, right| left + right);
    by_id
        .join(spent)
        .map(|(_, (customer, cents))| (customer.name, cents))
}

/// Names of customers without orders.
pub fn without_orders(
    ctx: &Context,
    customers: Vec<Customer>,
    orders: Vec<Order>,
) -> Dataset<String> {
    let by_id = ctx.parallelize(customers).key_by(|customer| customer.id);
    let ordered = ctx
        .parallelize(orders)
        .map(|order| (order.customer, order.id));
    by_id
        .left_join(ordered)
        .filter(|(_, (_, order))| order.is_none())
        .map(|(_, (customer, _))| customer.name)
}

#[allow(dead_code)]
#[tokio::main]
async fn main() -> Result<(), tone::Error> {
    let args = Args::parse();
    let ctx = args.context.context().await?;
    let customers = args.customers;
    let (people, orders) = generate(customers);
    let mut top = totals(&ctx, people.clone(), orders.clone())
        .collect()
        .await?;
    top.sort_by(|left, right| right.1.cmp(&left.1).then_with(|| left.0.cmp(&right.0)));
    for (name, cents) in top.iter().take(10) {
        println!("{name}\t{}.{:02}", cents / 100, cents % 100);
    }
    let lonely = without_orders(&ctx, people, orders).count().await?;
    println!("{lonely} customers without orders");
    Ok(())
}
