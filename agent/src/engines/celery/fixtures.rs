//! The captured Celery messages in `shared/fixtures/celery/<broker>/` (one JSON file each),
//! for the decoders' unit tests: events and remote-control replies read from the same files.

use serde_json::Value;

/// Every capture of `broker` (`redis`, `amqp`) whose file name starts with `prefix`, by name.
pub(crate) fn read(broker: &str, prefix: &str) -> Vec<(String, Value)> {
    let dir = format!(
        "{}/../../shared/fixtures/celery/{broker}",
        env!("CARGO_MANIFEST_DIR")
    );
    let mut out: Vec<(String, Value)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("fixtures at {dir}: {e}"))
        .map(|entry| entry.unwrap().path())
        .filter_map(|path| {
            let name = path.file_name()?.to_str()?.to_owned();
            name.starts_with(prefix).then(|| {
                let text = std::fs::read_to_string(&path).unwrap();
                (name, serde_json::from_str(&text).unwrap())
            })
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}
