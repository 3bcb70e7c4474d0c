//! Polling until something holds, with a deadline and a message saying what was awaited.

use std::future::Future;
use std::time::{Duration, Instant};

/// Polls `probe` every 50 ms until it holds; panics after `limit` naming `what`.
pub async fn wait_for<F, Fut>(limit: Duration, what: &str, probe: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    Wait::new(what).within(limit).until(probe).await;
}

/// A wait: what for, how long at most, how often to look, and what to print on a timeout.
pub struct Wait<'a> {
    what: String,
    limit: Duration,
    every: Duration,
    context: Option<Box<dyn Fn() -> String + 'a>>,
}

impl<'a> Wait<'a> {
    /// Waits for `what` (used in the timeout message), 20 s at most, looking every 50 ms.
    pub fn new(what: impl Into<String>) -> Wait<'a> {
        Wait {
            what: what.into(),
            limit: Duration::from_secs(20),
            every: Duration::from_millis(50),
            context: None,
        }
    }

    /// The deadline, from the first look.
    pub fn within(mut self, limit: Duration) -> Self {
        self.limit = limit;
        self
    }

    /// The pause between looks.
    pub fn every(mut self, every: Duration) -> Self {
        self.every = every;
        self
    }

    /// Something to print on a timeout (a log, say), read only then.
    pub fn context(mut self, context: impl Fn() -> String + 'a) -> Self {
        self.context = Some(Box::new(context));
        self
    }

    fn give_up(&self, last: &str) -> ! {
        let context = self.context.as_ref().map(|c| c()).unwrap_or_default();
        panic!(
            "timed out after {:?} waiting for {}{}{}{}",
            self.limit,
            self.what,
            if last.is_empty() { "" } else { ": " },
            last,
            if context.is_empty() {
                String::new()
            } else {
                format!("\n{context}")
            }
        );
    }

    /// Until `probe` gives `Ok`; the last `Err` is printed on a timeout.
    pub async fn until_ok<T, E, F, Fut>(self, mut probe: F) -> T
    where
        E: std::fmt::Display,
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        let deadline = Instant::now() + self.limit;
        loop {
            match probe().await {
                Ok(value) => return value,
                Err(last) if Instant::now() >= deadline => self.give_up(&last.to_string()),
                Err(_) => tokio::time::sleep(self.every).await,
            }
        }
    }

    /// Until `probe` gives `Some`.
    pub async fn until_some<T, F, Fut>(self, mut probe: F) -> T
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Option<T>>,
    {
        self.until_ok(|| {
            let next = probe();
            async move { next.await.ok_or("") }
        })
        .await
    }

    /// Until `probe` holds.
    pub async fn until<F, Fut>(self, mut probe: F)
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = bool>,
    {
        self.until_some(|| {
            let next = probe();
            async move { next.await.then_some(()) }
        })
        .await
    }

    /// [`Wait::until_ok`] for code without an async runtime (sleeps the thread).
    pub fn blocking_until_ok<T, E: std::fmt::Display>(
        self,
        mut probe: impl FnMut() -> Result<T, E>,
    ) -> T {
        let deadline = Instant::now() + self.limit;
        loop {
            match probe() {
                Ok(value) => return value,
                Err(last) if Instant::now() >= deadline => self.give_up(&last.to_string()),
                Err(_) => std::thread::sleep(self.every),
            }
        }
    }

    /// [`Wait::until`] for code without an async runtime (sleeps the thread).
    pub fn blocking_until(self, mut probe: impl FnMut() -> bool) {
        self.blocking_until_ok(|| probe().then_some(()).ok_or(""));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_wait_returns_what_the_probe_found() {
        let mut looks = 0;
        let found = Wait::new("the third look")
            .every(Duration::from_millis(1))
            .blocking_until_ok(|| {
                looks += 1;
                if looks == 3 {
                    Ok(looks)
                } else {
                    Err("not yet")
                }
            });
        assert_eq!(found, 3);
    }

    #[test]
    fn a_timeout_names_what_was_awaited_the_last_answer_and_the_context() {
        let panic = std::panic::catch_unwind(|| {
            Wait::new("the moon")
                .within(Duration::from_millis(20))
                .every(Duration::from_millis(5))
                .context(|| "the log".to_owned())
                .blocking_until_ok(|| Err::<(), _>("still the sun"))
        })
        .unwrap_err();
        let message = panic.downcast_ref::<String>().unwrap();
        assert!(
            message
                .starts_with("timed out after 20ms waiting for the moon: still the sun\nthe log"),
            "{message}"
        );
    }

    #[tokio::test]
    async fn wait_for_polls_until_the_condition_holds() {
        let start = Instant::now();
        wait_for(Duration::from_secs(5), "60 ms to pass", || async {
            start.elapsed() >= Duration::from_millis(60)
        })
        .await;
    }
}
