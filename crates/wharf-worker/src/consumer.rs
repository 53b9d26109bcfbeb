//! The apalis backend over the shard streams: its fetch stream is the reading loop's output, its sink appends to the streams, and apalis runs the handlers.
//!
//! apalis forgets a task once its handler returns `Ok`; the handler returns as soon as the entry
//! is in a batch, and the acknowledgement belongs to the batch ([`crate::batcher`] sends
//! `XACK`/`XDEL` after `PutObject`). So apalis's own acknowledgement is the identity here, by design.

use std::pin::Pin;
use std::sync::{Arc, Mutex};

use apalis::prelude::{
    BackendBuilder, BoxDynError, Task, TaskBuilder, WorkerBuilder, WorkerBuilderExt, WorkerContext,
};
use futures::stream::{self, BoxStream, StreamExt};
use futures::Sink;
use tokio::sync::mpsc;
use wharf_queue::Enqueuer;

use crate::batcher::BatcherHandle;
use crate::handler;
use crate::reader::Delivery;
use crate::stop::Stop;

type Fetch = BoxStream<'static, Result<Option<Task<Delivery>>, BoxDynError>>;
type Push = Pin<Box<dyn Sink<Task<Delivery>, Error = BoxDynError> + Send>>;

/// The backend's "database": the reading loop's output (taken once, by the first fetch) and
/// the enqueuer its sink appends with.
#[derive(Clone)]
struct Streams {
    deliveries: Arc<Mutex<Option<mpsc::Receiver<Delivery>>>>,
    enqueuer: Enqueuer,
}

fn fetcher(db: &mut Streams, _config: &(), _worker: &WorkerContext) -> Fetch {
    let taken = db
        .deliveries
        .lock()
        .map(|mut slot| slot.take())
        .unwrap_or_else(|poisoned| poisoned.into_inner().take());
    match taken {
        // Never yields Ok(None) or Err: either ends apalis's polling for good.
        Some(rx) => stream::unfold(rx, |mut rx| async move {
            let delivery = rx.recv().await?;
            Some((Ok(Some(TaskBuilder::new(delivery).build())), rx))
        })
        .boxed(),
        None => stream::empty().boxed(),
    }
}

fn sink(db: &mut Streams, _config: &()) -> Push {
    Box::pin(futures::sink::unfold(
        db.enqueuer.clone(),
        |enqueuer, task: Task<Delivery>| async move {
            enqueuer
                .enqueue(std::slice::from_ref(&task.args.submission))
                .await
                .map_err(|e| -> BoxDynError { Box::new(e) })?;
            Ok::<_, BoxDynError>(enqueuer)
        },
    ))
}

/// Runs apalis over `deliveries` until `stop` fires and every running handler has returned.
pub async fn run(
    name: &str,
    deliveries: mpsc::Receiver<Delivery>,
    enqueuer: Enqueuer,
    batcher: BatcherHandle,
    concurrency: usize,
    stop: Stop,
) -> Result<(), apalis::prelude::WorkerError> {
    let db = Streams {
        deliveries: Arc::new(Mutex::new(Some(deliveries))),
        enqueuer,
    };
    let backend = BackendBuilder::new_with_cfg(())
        .database(db)
        .fetcher(fetcher)
        .sink(sink)
        .build()
        .map_err(|e| apalis::prelude::WorkerError::BackendError(Box::new(e)))?;
    WorkerBuilder::new(name)
        .backend(backend)
        .data(batcher)
        .concurrency(concurrency.max(1))
        .build(handler::handle)
        .run_until(async move {
            stop.wait().await;
            Ok::<(), std::io::Error>(())
        })
        .await
}
