//! The line orders for one product wait in, inside the api, before they are sent to
//! PostgreSQL.
//!
//! Every order for a product takes that product's row lock at its commit, so orders for one
//! product commit one at a time whatever else happens. Sent all at once (a flash sale: every
//! connection ordering the same product), they wait on the row lock inside PostgreSQL, and a
//! row lock is not a fair line: when its holder commits, the waiter it wakes must first follow
//! the row to its new version, and an order arriving at that moment finds the new version
//! unlocked and takes it first. Some orders are overtaken again and again, which is the tail of
//! a flash sale. So the api lets only a few orders per product into PostgreSQL at once, enough
//! that the next one is already waiting when the lock comes free, and the rest wait here, in a
//! first-come, first-served line (tokio's semaphore is fair), holding no pooled connection.
//!
//! Only orders sent in a statement of their own take this line. Orders the api groups into
//! shared statements (`queue::group_commit`) wait in the group's line instead, where the few
//! statements in flight already bound what waits on a product's row.
//!
//! The line is per api process: with several api instances, PostgreSQL sees at most
//! `per_product` times the instances for one product, still a handful rather than every
//! connection of every client.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use uuid::Uuid;

/// Products whose line is this long are swept of idle lines when a new one is opened: a line
/// is closed when its last order leaves it, except when that order gave up while waiting.
const SWEEP_AT: usize = 1_024;

/// Per product, a line of the orders waiting to be sent; see the module docs.
#[derive(Debug, Clone)]
pub struct StockQueue {
    /// Orders of one product in PostgreSQL at once; `0` sends every order at once.
    per_product: usize,
    lines: Arc<Mutex<HashMap<Uuid, Arc<Semaphore>>>>,
}

/// An order's turn for all of its products: while it is held the order may be sent. Dropping
/// it lets the next order in each line go.
#[derive(Debug)]
#[must_use = "the turn ends when it is dropped"]
pub struct StockTurn {
    permits: Vec<(Uuid, OwnedSemaphorePermit)>,
    lines: Arc<Mutex<HashMap<Uuid, Arc<Semaphore>>>>,
}

impl StockQueue {
    /// Lines that let `per_product` orders of one product through at once (`0`: no line).
    pub fn new(per_product: usize) -> Self {
        Self {
            per_product,
            lines: Arc::default(),
        }
    }

    /// Waits for the turn of an order for `product_ids` (in any order, repeats allowed) in the
    /// line of each of them. The lines are joined in the products' id order, so two orders
    /// that share products cannot each hold a turn the other waits for. Cancel-safe: a caller
    /// that stops waiting leaves every line it had joined. The future borrows nothing.
    pub fn turn(&self, product_ids: &[Uuid]) -> impl Future<Output = StockTurn> + Send + use<> {
        let mut ids = product_ids.to_vec();
        ids.sort_unstable();
        ids.dedup();
        let queue = self.clone();
        async move {
            let mut turn = StockTurn {
                permits: Vec::new(),
                lines: queue.lines.clone(),
            };
            if queue.per_product == 0 {
                return turn;
            }
            for id in ids {
                let line = queue.line(id);
                let permit = line
                    .acquire_owned()
                    .await
                    .expect("a product's line is never closed");
                turn.permits.push((id, permit));
            }
            turn
        }
    }

    /// The line of `product_id`, opened if it has none.
    fn line(&self, product_id: Uuid) -> Arc<Semaphore> {
        let mut lines = self.lines.lock().expect("stock lines lock poisoned");
        if let Some(line) = lines.get(&product_id) {
            return line.clone();
        }
        if lines.len() >= SWEEP_AT {
            // Only the map holds an idle line.
            lines.retain(|_, line| Arc::strong_count(line) > 1);
        }
        lines
            .entry(product_id)
            .or_insert_with(|| Arc::new(Semaphore::new(self.per_product)))
            .clone()
    }

    /// Products with an open line: orders in it, sent or waiting.
    #[cfg(test)]
    fn open_lines(&self) -> usize {
        self.lines.lock().expect("stock lines lock poisoned").len()
    }
}

impl Drop for StockTurn {
    fn drop(&mut self) {
        if self.permits.is_empty() {
            return;
        }
        let mut lines = self.lines.lock().expect("stock lines lock poisoned");
        for (id, permit) in self.permits.drain(..) {
            let line = permit.semaphore().clone();
            drop(permit);
            // The map and `line` are its only holders: nobody is in it or waiting.
            if Arc::strong_count(&line) == 2 {
                lines.remove(&id);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    /// `N` product ids, in id order.
    fn ids<const N: usize>() -> [Uuid; N] {
        let mut ids = [(); N].map(|()| Uuid::new_v4());
        ids.sort_unstable();
        ids
    }

    async fn is_waiting(turn: &mut (impl Future<Output = StockTurn> + Unpin)) -> bool {
        tokio::time::timeout(Duration::from_millis(50), turn)
            .await
            .is_err()
    }

    #[tokio::test]
    async fn lets_per_product_orders_through_and_the_next_when_one_leaves() {
        let queue = StockQueue::new(2);
        let [product] = ids();
        let first = queue.turn(&[product]).await;
        let _second = queue.turn(&[product]).await;
        let mut third = Box::pin(queue.turn(&[product]));
        assert!(is_waiting(&mut third).await, "a third order must wait");
        drop(first);
        let _third = tokio::time::timeout(Duration::from_secs(5), third)
            .await
            .expect("the third order goes once the first leaves");
    }

    #[tokio::test]
    async fn other_products_do_not_wait() {
        let queue = StockQueue::new(1);
        let [hot, other] = ids();
        let _held = queue.turn(&[hot]).await;
        let mut elsewhere = Box::pin(queue.turn(&[other]));
        assert!(!is_waiting(&mut elsewhere).await);
    }

    #[tokio::test]
    async fn orders_go_in_the_order_they_came() {
        let queue = StockQueue::new(1);
        let [product] = ids();
        let held = queue.turn(&[product]).await;
        let (sent, mut order_of_sending) = tokio::sync::mpsc::unbounded_channel();
        for n in 0..5 {
            let queue = queue.clone();
            let sent = sent.clone();
            tokio::spawn(async move {
                let turn = queue.turn(&[product]).await;
                sent.send(n).unwrap();
                drop(turn);
            });
            // Each joins the line before the next is spawned.
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        drop(held);
        let mut seen = Vec::new();
        for _ in 0..5 {
            seen.push(order_of_sending.recv().await.unwrap());
        }
        assert_eq!(seen, vec![0, 1, 2, 3, 4]);
    }

    #[tokio::test]
    async fn orders_sharing_products_in_any_order_do_not_deadlock() {
        let queue = StockQueue::new(1);
        let [a, b] = ids();
        let mut tasks = Vec::new();
        for n in 0..50 {
            let queue = queue.clone();
            let products = if n % 2 == 0 { [a, b, a] } else { [b, a, b] };
            tasks.push(tokio::spawn(async move {
                let _turn = queue.turn(&products).await;
                tokio::task::yield_now().await;
            }));
        }
        for task in tasks {
            tokio::time::timeout(Duration::from_secs(5), task)
                .await
                .expect("no deadlock")
                .unwrap();
        }
        assert_eq!(queue.open_lines(), 0, "every line closes when empty");
    }

    #[tokio::test]
    async fn a_caller_that_stops_waiting_leaves_its_lines() {
        let queue = StockQueue::new(1);
        let [a, b] = ids();
        let held_b = queue.turn(&[b]).await;
        {
            // Joins a's line (its turn comes), then waits in b's, then gives up.
            let mut waiting = Box::pin(queue.turn(&[a, b]));
            assert!(is_waiting(&mut waiting).await);
        }
        let mut a_again = Box::pin(queue.turn(&[a]));
        assert!(!is_waiting(&mut a_again).await, "a's turn was given back");
        drop(a_again);
        drop(held_b);
        assert_eq!(queue.open_lines(), 0);
    }

    #[tokio::test]
    async fn no_line_when_per_product_is_zero() {
        let queue = StockQueue::new(0);
        let [product] = ids();
        let _turns: Vec<StockTurn> =
            futures::future::join_all((0..100).map(|_| queue.turn(&[product]))).await;
        assert_eq!(queue.open_lines(), 0);
    }
}
