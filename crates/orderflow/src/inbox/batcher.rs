//! Group commit: concurrent requests share one database transaction.
//!
//! Every request hands its row to one writer task and waits for the answer. The writer
//! takes whatever has queued up (up to `max_batch`), writes it in one transaction, commits
//! once and answers each request. While one commit is in flight the next batch forms, so
//! under load many acknowledgements share one fsync, and an idle system still commits a
//! lone request at once. Nothing is acknowledged before its commit returns.

use std::future::Future;

use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

/// The writer task has stopped (shutdown, or it panicked).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("the inbox writer has stopped")]
pub struct WriterStopped;

type Job<T, R> = (T, oneshot::Sender<R>);

/// A handle to the writer task; cheap to clone.
pub struct Batcher<T, R> {
    tx: mpsc::Sender<Job<T, R>>,
}

impl<T, R> Clone for Batcher<T, R> {
    fn clone(&self) -> Self {
        Self {
            tx: self.tx.clone(),
        }
    }
}

impl<T: Send + 'static, R: Send + 'static> Batcher<T, R> {
    /// Spawns the writer. `flush` gets a batch in arrival order and returns one answer per
    /// item, in the same order. The task ends when every handle is dropped.
    pub fn spawn<F, Fut>(max_batch: usize, queue: usize, mut flush: F) -> (Self, JoinHandle<()>)
    where
        F: FnMut(Vec<T>) -> Fut + Send + 'static,
        Fut: Future<Output = Vec<R>> + Send,
    {
        let max_batch = max_batch.max(1);
        let (tx, mut rx) = mpsc::channel::<Job<T, R>>(queue.max(1));
        let task = tokio::spawn(async move {
            let mut items = Vec::with_capacity(max_batch);
            let mut replies = Vec::with_capacity(max_batch);
            while let Some((item, reply)) = rx.recv().await {
                items.push(item);
                replies.push(reply);
                while items.len() < max_batch {
                    match rx.try_recv() {
                        Ok((item, reply)) => {
                            items.push(item);
                            replies.push(reply);
                        }
                        Err(_) => break,
                    }
                }
                let answers = flush(std::mem::take(&mut items)).await;
                debug_assert_eq!(answers.len(), replies.len(), "one answer per item");
                for (reply, answer) in replies.drain(..).zip(answers) {
                    // The caller may have gone away (client disconnected); the row is
                    // committed all the same.
                    let _ = reply.send(answer);
                }
            }
        });
        (Self { tx }, task)
    }

    /// Queues `item` and waits for its answer (after its batch has committed).
    pub async fn submit(&self, item: T) -> Result<R, WriterStopped> {
        let (reply, answer) = oneshot::channel();
        self.tx
            .send((item, reply))
            .await
            .map_err(|_| WriterStopped)?;
        answer.await.map_err(|_| WriterStopped)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn concurrent_submits_share_batches_and_get_their_own_answer() {
        let sizes = Arc::new(Mutex::new(Vec::new()));
        let seen = sizes.clone();
        let (b, _task) = Batcher::spawn(16, 1024, move |batch: Vec<u32>| {
            seen.lock().unwrap().push(batch.len());
            async move {
                // A slow commit lets the next batch form.
                tokio::time::sleep(Duration::from_millis(5)).await;
                batch.into_iter().map(|n| n * 2).collect::<Vec<_>>()
            }
        });
        let tasks: Vec<_> = (0..100u32)
            .map(|n| {
                let b = b.clone();
                tokio::spawn(async move { (n, b.submit(n).await) })
            })
            .collect();
        for t in tasks {
            let (n, answer) = t.await.unwrap();
            assert_eq!(answer, Ok(n * 2));
        }
        let sizes = sizes.lock().unwrap();
        assert_eq!(sizes.iter().sum::<usize>(), 100);
        assert!(sizes.iter().all(|s| *s <= 16));
        assert!(sizes.len() < 100, "batches were shared: {sizes:?}");
    }

    #[tokio::test]
    async fn a_lone_request_is_written_at_once() {
        let (b, _task) = Batcher::spawn(64, 8, |batch: Vec<&'static str>| async move {
            batch.into_iter().map(str::len).collect::<Vec<_>>()
        });
        assert_eq!(b.submit("abc").await, Ok(3));
    }

    #[tokio::test]
    async fn a_stopped_writer_is_an_error_not_a_hang() {
        let (b, task) = Batcher::spawn(4, 4, |_batch: Vec<u8>| async move {
            panic!("writer crashed");
            #[allow(unreachable_code)]
            Vec::<u8>::new()
        });
        assert_eq!(b.submit(1).await, Err(WriterStopped));
        assert!(task.await.is_err());
        assert_eq!(b.submit(2).await, Err(WriterStopped));
    }
}
