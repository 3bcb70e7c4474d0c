//! Streaming exports of list results (CSV, XLSX, JSON) in constant memory: rows are read in
//! keyset pages on one blocking thread, a few pages ahead of a second that encodes them into a
//! bounded channel the response body drains, so memory stays flat whatever the row count and
//! the database read overlaps the encoding. Text cells that a spreadsheet would
//! run as a formula (starting with `=`, `+`, `-`, `@`, tab or carriage return) are prefixed
//! with `'`.

mod cells;

use std::io::Write;

use axum::body::{Body, Bytes};
use axum::http::header::{CONTENT_DISPOSITION, CONTENT_TYPE};
use axum::response::{IntoResponse, Response};
use serde_json::Value;

pub use cells::CellPicker;
use tokio::sync::mpsc;

/// Export formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Comma-separated values with a header row.
    Csv,
    /// An Excel workbook (a new sheet every 1,048,575 rows).
    Xlsx,
    /// A JSON array of objects.
    Json,
}

impl Format {
    /// Parses `csv`, `xlsx` or `json`.
    pub fn parse(text: &str) -> Option<Format> {
        match text {
            "csv" => Some(Format::Csv),
            "xlsx" => Some(Format::Xlsx),
            "json" => Some(Format::Json),
            _ => None,
        }
    }

    fn content_type(self) -> &'static str {
        match self {
            Format::Csv => "text/csv; charset=utf-8",
            Format::Xlsx => "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
            Format::Json => "application/json",
        }
    }

    fn extension(self) -> &'static str {
        match self {
            Format::Csv => "csv",
            Format::Xlsx => "xlsx",
            Format::Json => "json",
        }
    }
}

/// The next page of rows, `None` at the end; `Err` stops the export (the client gets a
/// truncated body, and the error is logged).
pub type NextPage<R = Cells> = Box<dyn FnMut() -> Result<Option<Vec<R>>, String> + Send>;

/// A row's cells, in the export's column order.
pub type Cells = Vec<Value>;

/// Turns a row as read into its cells in column order (run on the encoder's thread, so the
/// reader's thread does nothing but read; [`CellPicker`] does it for struct rows).
pub type ToCells<R> = Box<dyn FnMut(R) -> Cells + Send>;

/// Bytes buffered before a chunk goes to the client.
const CHUNK: usize = 64 * 1024;

/// Chunks in flight between the writer and the client.
const CHANNEL: usize = 4;

/// Rows per worksheet (Excel's limit, less the header).
const SHEET_ROWS: u32 = 1_048_575;

/// Streams an export of `columns` named `{name}.{ext}`: pages of rows are read on one thread,
/// turned into cells and encoded on another.
pub fn respond<R: Send + 'static>(
    format: Format,
    name: &str,
    columns: Vec<&'static str>,
    pages: NextPage<R>,
    mut to_cells: ToCells<R>,
) -> Response {
    let (tx, rx) = mpsc::channel::<Chunk>(CHANNEL);
    let failed = tx.clone();
    let mut read = read_ahead(pages);
    let pages: NextPage =
        Box::new(move || Ok(read()?.map(|rows| rows.into_iter().map(&mut to_cells).collect())));
    tokio::task::spawn_blocking(move || {
        let out = ChannelWriter {
            tx,
            buf: Vec::with_capacity(CHUNK),
        };
        let written = match format {
            Format::Csv => csv(out, &columns, pages),
            Format::Json => json(out, &columns, pages),
            Format::Xlsx => xlsx(out, &columns, pages),
        };
        if let Err(e) = written {
            tracing::error!(error = %e, "export stopped");
            // The body fails instead of ending: the client sees a broken download, never a
            // file that looks complete but is not.
            let _ =
                failed.blocking_send(Err(std::io::Error::other(format!("export stopped: {e}"))));
        }
    });
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|chunk| (chunk, rx))
    });
    (
        [
            (CONTENT_TYPE, format.content_type().to_owned()),
            (
                CONTENT_DISPOSITION,
                format!("attachment; filename=\"{name}.{}\"", format.extension()),
            ),
        ],
        Body::from_stream(stream),
    )
        .into_response()
}

/// Pages read ahead of the encoder.
const PAGES_AHEAD: usize = 2;

/// Runs `pages` on a blocking thread of its own, at most [`PAGES_AHEAD`] pages ahead of the
/// caller: the query of the next page runs while this one is encoded. The reader stops when
/// the encoder goes away (a client that disconnected).
fn read_ahead<R: Send + 'static>(mut pages: NextPage<R>) -> NextPage<R> {
    let (tx, rx) = std::sync::mpsc::sync_channel(PAGES_AHEAD);
    tokio::task::spawn_blocking(move || {
        loop {
            let page = pages();
            let last = !matches!(page, Ok(Some(_)));
            if tx.send(page).is_err() || last {
                return;
            }
        }
    });
    Box::new(move || {
        rx.recv()
            .unwrap_or_else(|_| Err("the export's reader stopped".to_owned()))
    })
}

/// Text a spreadsheet will not run as a formula.
pub fn neutralise(text: &str) -> std::borrow::Cow<'_, str> {
    if text.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        format!("'{text}").into()
    } else {
        text.into()
    }
}

/// A cell as text: strings neutralised, structures as JSON (borrowed when it can be: most
/// cells are plain strings, and an export writes millions).
fn cell_text(value: &Value) -> std::borrow::Cow<'_, str> {
    match value {
        Value::Null => "".into(),
        Value::String(s) => neutralise(s),
        Value::Number(n) => n.to_string().into(),
        Value::Bool(b) => if *b { "true" } else { "false" }.into(),
        other => neutralise(&other.to_string()).into_owned().into(),
    }
}

fn csv(out: ChannelWriter, columns: &[&str], mut pages: NextPage) -> Result<(), String> {
    let mut writer = ::csv::Writer::from_writer(out);
    writer.write_record(columns).map_err(|e| e.to_string())?;
    while let Some(rows) = pages()? {
        for row in &rows {
            for cell in row {
                writer
                    .write_field(cell_text(cell).as_bytes())
                    .map_err(|e| e.to_string())?;
            }
            writer
                .write_record(None::<&[u8]>)
                .map_err(|e| e.to_string())?;
        }
    }
    writer.flush().map_err(|e| e.to_string())?;
    writer
        .into_inner()
        .map_err(|e| e.to_string())?
        .finish()
        .map_err(|e| e.to_string())
}

fn json(mut out: ChannelWriter, columns: &[&str], mut pages: NextPage) -> Result<(), String> {
    out.write_all(b"[").map_err(|e| e.to_string())?;
    let mut first = true;
    while let Some(rows) = pages()? {
        for row in rows {
            if !first {
                out.write_all(b",").map_err(|e| e.to_string())?;
            }
            first = false;
            // An object with the members in column order.
            let mut separator: &[u8] = b"{";
            for (column, cell) in columns.iter().zip(&row) {
                out.write_all(separator).map_err(|e| e.to_string())?;
                separator = b",";
                serde_json::to_writer(&mut out, column).map_err(|e| e.to_string())?;
                out.write_all(b":").map_err(|e| e.to_string())?;
                serde_json::to_writer(&mut out, cell).map_err(|e| e.to_string())?;
            }
            out.write_all(if row.is_empty() { b"{}" } else { b"}" as &[u8] })
                .map_err(|e| e.to_string())?;
        }
    }
    out.write_all(b"]").map_err(|e| e.to_string())?;
    out.finish().map_err(|e| e.to_string())
}

fn xlsx(out: ChannelWriter, columns: &[&str], mut pages: NextPage) -> Result<(), String> {
    use rust_xlsxwriter::Workbook;
    let error = |e: rust_xlsxwriter::XlsxError| e.to_string();
    let mut workbook = Workbook::new();
    let mut sheet = workbook
        .add_worksheet_with_constant_memory()
        .map_err(error)?;
    let header = |sheet: &mut rust_xlsxwriter::Worksheet| -> Result<(), String> {
        for (c, column) in columns.iter().enumerate() {
            sheet.write_string(0, c as u16, *column).map_err(error)?;
        }
        Ok(())
    };
    header(sheet)?;
    let mut row_number = 0u32;
    while let Some(rows) = pages()? {
        for row in &rows {
            if row_number == SHEET_ROWS {
                sheet = workbook
                    .add_worksheet_with_constant_memory()
                    .map_err(error)?;
                header(sheet)?;
                row_number = 0;
            }
            row_number += 1;
            for (c, cell) in row.iter().enumerate() {
                let col = c as u16;
                match cell {
                    Value::Null => {}
                    Value::Number(n) if n.as_f64().is_some() => {
                        sheet
                            .write_number(row_number, col, n.as_f64().unwrap_or_default())
                            .map_err(error)?;
                    }
                    Value::Bool(b) => {
                        sheet.write_boolean(row_number, col, *b).map_err(error)?;
                    }
                    other => {
                        sheet
                            .write_string(row_number, col, cell_text(other))
                            .map_err(error)?;
                    }
                }
            }
        }
    }
    let mut out = out;
    workbook.save_to_writer(&mut out).map_err(error)?;
    out.finish().map_err(|e| e.to_string())
}

/// A piece of the body, or the error that ends it.
type Chunk = std::io::Result<Bytes>;

/// A writer whose bytes go to the response body in chunks; blocks while the client is slow.
struct ChannelWriter {
    tx: mpsc::Sender<Chunk>,
    buf: Vec<u8>,
}

impl ChannelWriter {
    fn send(&mut self) -> std::io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK));
        self.tx
            .blocking_send(Ok(Bytes::from(chunk)))
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::BrokenPipe, "client went away"))
    }

    fn finish(mut self) -> std::io::Result<()> {
        self.send()
    }
}

impl Write for ChannelWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= CHUNK {
            self.send()?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.send()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formulas_are_neutralised() {
        for risky in ["=1+1", "+1", "-2", "@SUM(A1)", "\tx", "\rx"] {
            assert_eq!(neutralise(risky), format!("'{risky}"));
        }
        for safe in ["plain", "1-2", "a=b", ""] {
            assert_eq!(neutralise(safe), safe);
        }
        assert_eq!(cell_text(&Value::from(-3)), "-3", "numbers stay numbers");
    }
}
