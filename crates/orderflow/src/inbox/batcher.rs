//! Group commit: concurrent requests share one database transaction.
//!
//! Every request hands its row to one writer task and waits for the answer. The writer
//! takes whatever has queued up (up to `max_batch`), writes it in one transaction, commits
//! once and answers each request. While one commit is in flight the next batch forms, so
//! under load many acknowledgements share one fsync, and an idle system still commits a
//! lone request at once. Nothing is acknowledged before its commit returns.

use std::future::Future;

use tokio::sync::mpsc::error::TryRecvError;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

/// The writer task has stopped (shutdown, or it panicked).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("the inbox writer has stopped")]
pub struct WriterStopped;

type Job<T, R> = (T, oneshot::Sender<R>);

/// What the writer task does with a batch.
pub trait Flush<T, R>: Send + 'static {
    /// Writes a batch (in arrival order) and returns one answer per item, in order.
    fn flush(&mut self, batch: Vec<T>) -> impl Future<Output = Vec<R>> + Send;

    /// The queue is empty: let go of what is kept between batches (a connection) before
    /// the writer waits for the next item.
    fn idle(&mut self) -> impl Future<Output = ()> + Send {
        async {}
    }
}

/// A closure is a writer that keeps nothing between batches.
impl<T, R, F, Fut> Flush<T, R> for F
where
    F: FnMut(Vec<T>) -> Fut + Send + 'static,
    Fut: Future<Output = Vec<R>> + Send,
{
    fn flush(&mut self, batch: Vec<T>) -> impl Future<Output = Vec<R>> + Send {
        self(batch)
    }
}

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
    /// Spawns the writer. It hands each batch to `writer` and sends each item its answer;
    /// the task ends when every handle is dropped.
    pub fn spawn(
        max_batch: usize,
        queue: usize,
        mut writer: impl Flush<T, R>,
    ) -> (Self, JoinHandle<()>) {
        let max_batch = max_batch.max(1);
        let (tx, mut rx) = mpsc::channel::<Job<T, R>>(queue.max(1));
        let task = tokio::spawn(async move {
            let mut items = Vec::with_capacity(max_batch);
            let mut replies = Vec::with_capacity(max_batch);
            loop {
                let (item, reply) = match rx.try_recv() {
                    Ok(job) => job,
                    Err(empty_or_closed) => {
                        writer.idle().await;
                        if empty_or_closed == TryRecvError::Disconnected {
                            break;
                        }
                        match rx.recv().await {
                            Some(job) => job,
                            None => break,
                        }
                    }
                };
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
                let answers = writer.flush(std::mem::take(&mut items)).await;
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

    /// Records what the writer is asked to do: `flush(n)` and `idle`.
    struct Recorder(Arc<Mutex<Vec<String>>>);

    impl Flush<u32, u32> for Recorder {
        async fn flush(&mut self, batch: Vec<u32>) -> Vec<u32> {
            self.0
                .lock()
                .unwrap()
                .push(format!("flush({})", batch.len()));
            tokio::time::sleep(Duration::from_millis(20)).await;
            batch
        }

        async fn idle(&mut self) {
            self.0.lock().unwrap().push("idle".into());
        }
    }

    #[tokio::test]
    async fn the_writer_is_told_when_the_queue_runs_empty_and_not_between_full_batches() {
        let log = Arc::new(Mutex::new(Vec::new()));
        let (b, task) = Batcher::spawn(4, 64, Recorder(log.clone()));
        // Six at once (one thread): they queue while the writer waits, which takes them
        // in batches of at most four.
        let tasks: Vec<_> = (0..6u32)
            .map(|n| {
                let b = b.clone();
                tokio::spawn(async move { b.submit(n).await })
            })
            .collect();
        for (n, t) in tasks.into_iter().enumerate() {
            assert_eq!(t.await.unwrap(), Ok(n as u32));
        }
        drop(b);
        task.await.unwrap();
        // Idle before the first item and once the queue is empty; batches that follow
        // each other are not separated by `idle`.
        let log = log.lock().unwrap().clone();
        assert_eq!(log, ["idle", "flush(4)", "flush(2)", "idle"]);
    }
}
