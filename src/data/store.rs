//! The bar store: Hive partitions `<root>/bars/timeframe=<tf>/symbol=<SYM>/<year>.parquet` and
//! `<root>/funding/symbol=<SYM>/<year>.parquet` (interfaces.md "Files"), or a single long-format
//! Parquet / CSV file wherever a store is accepted. Mark- and index-price bars ([`BarKind`]) live
//! beside the traded ones in `<root>/bars/timeframe=<tf>/kind=<mark|index>/symbol=<SYM>/<year>.parquet`
//! with the columns `ts, open, high, low, close` (no volume: read as NaN). The paths are built by
//! [`StoreLayout`].
//!
//! Reads push the selection down: only the asked symbols' directories are listed, year files
//! outside the time range are not opened, and row groups whose `ts` (or, in long files, `symbol`)
//! statistics lie outside the selection are not read. [`ReadStats`] makes that checkable.
//! Writes merge with what is there (the new row wins on `(symbol, ts)`), sort, and replace each
//! file atomically (temp file, fsync, rename, fsync of the directory).

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{Seek, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{ArrayRef, Float64Array, Int64Array, RecordBatch};
use arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use parquet::arrow::arrow_reader::{ArrowReaderMetadata, ArrowReaderOptions, ParquetRecordBatchReaderBuilder};
use parquet::arrow::ArrowWriter;
use parquet::arrow::ProjectionMask;
use parquet::basic::Compression;
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use parquet::file::statistics::Statistics;
use parquet::schema::types::ColumnPath;

use super::arrow_io::{bars_from_batches_with, funding_from_batches_with, ArrowBars};
use super::layout::StoreLayout;
use super::panel::{Bars, Funding};
use crate::error::{Error, Result};
use crate::timeframe::{Timeframe, MS_PER_DAY};

/// What to read: symbols (all when `None`), `[start, end)` in epoch ms, and the timeframe.
#[derive(Debug, Clone, PartialEq)]
pub struct Selection {
    pub symbols: Option<Vec<String>>,
    pub start: Option<i64>,
    pub end: Option<i64>,
    pub timeframe: Timeframe,
}

impl Selection {
    pub fn all(timeframe: Timeframe) -> Self {
        Self { symbols: None, start: None, end: None, timeframe }
    }
    fn wants_symbol(&self, symbol: &str) -> bool {
        self.symbols.as_ref().is_none_or(|list| list.iter().any(|s| s == symbol))
    }
    fn wants_ts(&self, ts: i64) -> bool {
        self.start.is_none_or(|start| ts >= start) && self.end.is_none_or(|end| ts < end)
    }
    /// Whether `[min, max]` (inclusive) can hold a wanted ts.
    fn overlaps(&self, min: i64, max: i64) -> bool {
        self.start.is_none_or(|start| max >= start) && self.end.is_none_or(|end| min < end)
    }
}

/// How much of the store a read touched.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct ReadStats {
    pub files_opened: usize,
    pub row_groups_total: usize,
    pub row_groups_read: usize,
    pub rows_read: usize,
}

impl ReadStats {
    fn add(&mut self, other: &ReadStats) {
        self.files_opened += other.files_opened;
        self.row_groups_total += other.row_groups_total;
        self.row_groups_read += other.row_groups_read;
        self.rows_read += other.rows_read;
    }
}

/// What a write changed.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct WriteStats {
    pub files_written: usize,
    pub rows_added: usize,
    pub rows_replaced: usize,
}

impl std::ops::AddAssign for WriteStats {
    fn add_assign(&mut self, other: Self) {
        self.files_written += other.files_written;
        self.rows_added += other.rows_added;
        self.rows_replaced += other.rows_replaced;
    }
}

/// Which price a bar series is of: the traded (last) price, the mark price or the index price.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BarKind {
    #[default]
    Trade,
    Mark,
    Index,
}

impl BarKind {
    pub fn parse(text: &str) -> Result<Self> {
        match text {
            "trade" => Ok(BarKind::Trade),
            "mark" => Ok(BarKind::Mark),
            "index" => Ok(BarKind::Index),
            other => Err(Error::invalid(format!("unknown bar kind '{other}': expected trade, mark or index"))),
        }
    }
    pub fn label(self) -> &'static str {
        match self {
            BarKind::Trade => "trade",
            BarKind::Mark => "mark",
            BarKind::Index => "index",
        }
    }
    /// Traded bars have a volume; mark and index bars have none (their `volume` is NaN).
    pub fn has_volume(self) -> bool {
        self == BarKind::Trade
    }
}

fn missing(path: &Path) -> Error {
    Error::io(path.display(), std::io::Error::new(std::io::ErrorKind::NotFound, "no such file or directory"))
}

/// Read bars from a store root or a single long-format file.
pub fn read_bars(path: &Path, selection: &Selection) -> Result<(Bars, ReadStats)> {
    let (arrow, stats) = read_bars_arrow(path, selection)?;
    let view = arrow.view();
    let bars = if view.is_canonical() { view.to_bars() } else { sort_bars(view.to_bars()) };
    Ok((bars, stats))
}

/// [`read_bars`] of mark or index bars (`BarKind::Trade` is `read_bars`). A single long file is
/// read as it is, whatever its kind.
pub fn read_bars_of_kind(path: &Path, selection: &Selection, kind: BarKind) -> Result<(Bars, ReadStats)> {
    let (arrow, stats) = read_bars_arrow_of_kind(path, selection, kind)?;
    let view = arrow.view();
    let mut bars = if view.is_canonical() { view.to_bars() } else { sort_bars(view.to_bars()) };
    if !kind.has_volume() {
        bars.volume.iter_mut().for_each(|v| *v = f64::NAN);
        bars.turnover = None;
    }
    Ok((bars, stats))
}

/// Whether a store root has bars of `kind` for `timeframe`.
pub fn store_has_kind(root: &Path, timeframe: Timeframe, kind: BarKind) -> bool {
    root.is_dir() && timeframe_dir(root, timeframe).is_ok_and(|dir| StoreLayout::kind_dir(&dir, kind).is_dir())
}

/// [`read_bars`] as Arrow columns: the decoded arrays are concatenated once and used as they are.
pub fn read_bars_arrow(path: &Path, selection: &Selection) -> Result<(ArrowBars, ReadStats)> {
    read_bars_arrow_of_kind(path, selection, BarKind::Trade)
}

/// [`read_bars_arrow`] of the bars of `kind`.
pub fn read_bars_arrow_of_kind(path: &Path, selection: &Selection, kind: BarKind) -> Result<(ArrowBars, ReadStats)> {
    let mut stats = ReadStats::default();
    if !path.exists() {
        return Err(missing(path));
    }
    let source = path.display().to_string();
    let parts: Vec<(Option<String>, RecordBatch)> = if path.is_dir() {
        let dir = StoreLayout::kind_dir(&timeframe_dir(path, selection.timeframe)?, kind);
        if !dir.is_dir() {
            return Err(Error::invalid(format!(
                "{}: the store has no {} bars for timeframe {} (expected {})",
                path.display(),
                kind.label(),
                selection.timeframe.label(),
                dir.display()
            )));
        }
        let mut files = Vec::new();
        for (symbol, symbol_dir) in partitions(&dir)? {
            if selection.wants_symbol(&symbol) {
                files.extend(year_files(&symbol_dir, selection)?.into_iter().map(|file| (symbol.clone(), file)));
            }
        }
        // Partition files are independent: decode them in parallel (fork-safe threads), keep the order.
        let decoded = crate::threads::map_ordered(&files, files.len() * 10_000, |(symbol, file)| {
            let mut file_stats = ReadStats::default();
            let batches = read_parquet(file, selection, &mut file_stats, false)?;
            Ok((symbol.clone(), batches, file_stats))
        });
        let mut parts = Vec::new();
        for result in decoded {
            let (symbol, batches, file_stats): (String, Vec<RecordBatch>, ReadStats) = result?;
            stats.add(&file_stats);
            parts.extend(batches.into_iter().map(|batch| (Some(symbol.clone()), batch)));
        }
        parts
    } else {
        let batches = match extension(path).as_str() {
            "csv" => {
                stats.files_opened += 1;
                read_csv(path)?
            }
            _ => read_parquet(path, selection, &mut stats, true)?,
        };
        batches.into_iter().map(|batch| (None, batch)).collect()
    };
    let parts: Vec<(Option<&str>, RecordBatch)> =
        parts.iter().map(|(symbol, batch)| (symbol.as_deref(), batch.clone())).collect();
    let arrow =
        ArrowBars::from_parts(&parts, &source, |name| selection.wants_symbol(name), |ts| selection.wants_ts(ts))?;
    Ok((arrow, stats))
}

/// Read funding events from a store root (its `funding/` partition; none there is no error) or a
/// single long-format file with `ts, symbol, rate`.
pub fn read_funding(path: &Path, symbols: Option<&[String]>, start: Option<i64>, end: Option<i64>) -> Result<Funding> {
    if !path.exists() {
        return Err(missing(path));
    }
    let selection =
        Selection { symbols: symbols.map(|s| s.to_vec()), start, end, timeframe: Timeframe::from_ms(MS_PER_DAY) };
    let mut stats = ReadStats::default();
    let mut funding = Funding::default();
    if path.is_dir() {
        let dir = StoreLayout::new(path).funding();
        if !dir.is_dir() {
            return Ok(funding);
        }
        let mut files = Vec::new();
        for (symbol, symbol_dir) in partitions(&dir)? {
            if selection.wants_symbol(&symbol) {
                files.extend(year_files(&symbol_dir, &selection)?.into_iter().map(|file| (symbol.clone(), file)));
            }
        }
        // Fork-safe threads, as for bars: a forked Python worker may read a store.
        let parts: Vec<Funding> = crate::threads::map_ordered(&files, files.len() * 10_000, |(symbol, file)| {
            let batches = read_parquet(file, &selection, &mut ReadStats::default(), false)?;
            funding_from_batches_with(&batches, &file.display().to_string(), Some(symbol))
        })
        .into_iter()
        .collect::<Result<_>>()?;
        for part in parts {
            let codes = super::panel::merge_names(&mut funding.names, &part.names);
            funding.ts.extend(part.ts);
            funding.symbol.extend(part.symbol.iter().map(|&c| codes[c as usize]));
            funding.rate.extend(part.rate);
        }
    } else {
        let batches = read_parquet(path, &selection, &mut stats, true)?;
        funding = funding_from_batches_with(&batches, &path.display().to_string(), None)?;
    }
    let wanted: Vec<bool> = funding.names.iter().map(|name| selection.wants_symbol(name)).collect();
    let keep: Vec<usize> = (0..funding.len())
        .filter(|&row| wanted[funding.symbol[row] as usize] && selection.wants_ts(funding.ts[row]))
        .collect();
    Ok(if keep.len() == funding.len() { funding } else { funding.take(&keep) })
}

/// Timeframes present in a store.
pub fn store_timeframes(root: &Path) -> Result<Vec<Timeframe>> {
    let bars = StoreLayout::new(root).bars();
    if !bars.is_dir() {
        return Err(Error::invalid(format!("{}: not a bar store (no bars/ directory)", root.display())));
    }
    let mut found = Vec::new();
    for (label, _) in partitions_named(&bars, StoreLayout::TIMEFRAME_KEY)? {
        found.push(Timeframe::parse(&label).map_err(|err| err.context(bars.display()))?);
    }
    found.sort();
    Ok(found)
}

/// `<root>/bars/timeframe=<tf>`; also accepts the `bars/` directory or the timeframe directory itself.
fn timeframe_dir(root: &Path, timeframe: Timeframe) -> Result<PathBuf> {
    let label = StoreLayout::timeframe_partition(timeframe);
    for candidate in [StoreLayout::new(root).timeframe(timeframe), root.join(&label)] {
        if candidate.is_dir() {
            return Ok(candidate);
        }
    }
    if fs::read_dir(root)
        .map_err(|err| Error::io(root.display(), err))?
        .flatten()
        .any(|e| StoreLayout::partition_value(&e.file_name().to_string_lossy(), StoreLayout::SYMBOL_KEY).is_some())
    {
        return Ok(root.to_path_buf());
    }
    let found = store_timeframes(root).map(|tfs| tfs.iter().map(|t| t.label()).collect::<Vec<_>>().join(", "));
    Err(Error::invalid(match found {
        Ok(list) if !list.is_empty() => {
            format!("{}: the store has no bars for timeframe {} (found: {list})", root.display(), timeframe.label())
        }
        _ => format!("{}: not a bar store (expected {})", root.display(), StoreLayout::BARS_PATTERN),
    }))
}

/// `symbol=<SYM>` partitions of a directory, sorted by symbol.
fn partitions(dir: &Path) -> Result<Vec<(String, PathBuf)>> {
    partitions_named(dir, StoreLayout::SYMBOL_KEY)
}

fn partitions_named(dir: &Path, key: &str) -> Result<Vec<(String, PathBuf)>> {
    let mut found = Vec::new();
    for entry in fs::read_dir(dir).map_err(|err| Error::io(dir.display(), err))? {
        let entry = entry.map_err(|err| Error::io(dir.display(), err))?;
        let name = entry.file_name().to_string_lossy().to_string();
        if let Some(value) = StoreLayout::partition_value(&name, key) {
            if entry.path().is_dir() {
                found.push((value.to_string(), entry.path()));
            }
        }
    }
    found.sort();
    Ok(found)
}

/// Parquet files of a partition whose year can hold the selection's time range.
fn year_files(dir: &Path, selection: &Selection) -> Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for entry in fs::read_dir(dir).map_err(|err| Error::io(dir.display(), err))? {
        let path = entry.map_err(|err| Error::io(dir.display(), err))?.path();
        if extension(&path) != "parquet" {
            continue;
        }
        if let Some(year) = StoreLayout::year_of_file(&path) {
            if !selection.overlaps(year_start_ms(year), year_start_ms(year + 1) - 1) {
                continue;
            }
        }
        files.push(path);
    }
    files.sort();
    Ok(files)
}

fn extension(path: &Path) -> String {
    path.extension().and_then(|e| e.to_str()).unwrap_or("").to_ascii_lowercase()
}

/// Epoch ms of Jan 1st 00:00 UTC of `year` (proleptic Gregorian).
pub fn year_start_ms(year: i32) -> i64 {
    let y = year as i64 - 1;
    let days = 365 * (y - 1969) + (y / 4 - 1969 / 4) - (y / 100 - 1969 / 100) + (y / 400 - 1969 / 400);
    days * MS_PER_DAY
}

/// UTC calendar year of an epoch-ms timestamp.
pub fn year_of(ts: i64) -> i32 {
    let mut year = (1970 + ts.div_euclid(MS_PER_DAY) / 366) as i32;
    while year_start_ms(year + 1) <= ts {
        year += 1;
    }
    while year_start_ms(year) > ts {
        year -= 1;
    }
    year
}

/// Files up to this size are read into memory with one read before decoding: the decoder reads
/// page headers and pages with a syscall each, which cost more than decoding a small store file.
const WHOLE_FILE_BYTES: u64 = 16 << 20;

fn read_parquet(
    path: &Path,
    selection: &Selection,
    stats: &mut ReadStats,
    long_format: bool,
) -> Result<Vec<RecordBatch>> {
    let mut file = File::open(path).map_err(|err| Error::io(path.display(), err))?;
    stats.files_opened += 1;
    let size = file.metadata().map_err(|err| Error::io(path.display(), err))?.len();
    if size > WHOLE_FILE_BYTES {
        return decode_parquet(path, file, || File::open(path), selection, stats, long_format);
    }
    let mut contents = Vec::with_capacity(size as usize);
    std::io::Read::read_to_end(&mut file, &mut contents).map_err(|err| Error::io(path.display(), err))?;
    let contents = bytes::Bytes::from(contents);
    decode_parquet(path, contents.clone(), || Ok(contents.clone()), selection, stats, long_format)
}

/// The selected row groups of the Parquet file at `path` (its contents in `input`; `reopen` gives
/// another reader of them for a column-parallel decode).
fn decode_parquet<R: parquet::file::reader::ChunkReader + 'static>(
    path: &Path,
    input: R,
    reopen: impl Fn() -> std::io::Result<R> + Sync,
    selection: &Selection,
    stats: &mut ReadStats,
    long_format: bool,
) -> Result<Vec<RecordBatch>> {
    let corrupt = |err: Box<dyn std::error::Error + Send + Sync>| {
        Error::format_from(format!("{}: not a valid Parquet file", path.display()), err)
    };
    let plain = ArrowReaderMetadata::load(&input, ArrowReaderOptions::new()).map_err(|err| corrupt(err.into()))?;
    let metadata = plain.metadata().clone();
    let arrow_schema = plain.schema().clone();
    let columns = plain.parquet_schema().columns().to_vec();
    let position = |name: &str| columns.iter().position(|c| c.name() == name);
    // Statistics of ts are comparable with ms only when ts is stored as ms.
    let ts_in_ms = matches!(
        arrow_schema.field_with_name("ts").map(|f| f.data_type().clone()),
        Ok(DataType::Int64) | Ok(DataType::Timestamp(TimeUnit::Millisecond, _))
    );
    let ts_column = position("ts").filter(|_| ts_in_ms);
    let symbol_column = if long_format { position("symbol") } else { None };
    stats.row_groups_total += metadata.num_row_groups();
    let selected = pruned_row_groups(&metadata, selection, ts_column, symbol_column);
    stats.row_groups_read += selected.len();
    if selected.is_empty() {
        return Ok(Vec::new());
    }
    // A batch as large as what is read, never larger: the reader allocates whole batches up front.
    let rows: i64 = selected.iter().map(|&index| metadata.row_group(index).num_rows()).sum();
    let batch_size = (rows.max(1) as usize).min(1 << 20);
    let threads = crate::threads::cores();
    let n_roots = arrow_schema.fields().len();
    let batches = if rows < 100_000 || threads < 2 || n_roots < 2 {
        let builder = ParquetRecordBatchReaderBuilder::new_with_metadata(input, plain);
        let reader =
            builder.with_row_groups(selected).with_batch_size(batch_size).build().map_err(|err| corrupt(err.into()))?;
        reader.collect::<Result<Vec<_>, _>>().map_err(|err| corrupt(err.into()))?
    } else {
        read_columns_in_parallel(reopen, &plain, &selected, batch_size, threads.min(n_roots))
            .map_err(|err| corrupt(err.into()))?
    };
    stats.rows_read += batches.iter().map(|b| b.num_rows()).sum::<usize>();
    Ok(batches)
}

/// A large file's columns decoded on `threads` threads, each reader (from `reopen`) a projection
/// of the columns (dealt round-robin so that the heavy numeric ones spread), all of one batch size
/// so that their batches line up; put back together in the file's column order.
fn read_columns_in_parallel<R: parquet::file::reader::ChunkReader + 'static>(
    reopen: impl Fn() -> std::io::Result<R> + Sync,
    metadata: &ArrowReaderMetadata,
    row_groups: &[usize],
    batch_size: usize,
    threads: usize,
) -> std::result::Result<Vec<RecordBatch>, parquet::errors::ParquetError> {
    let n_roots = metadata.schema().fields().len();
    let projections: Vec<Vec<usize>> = (0..threads).map(|part| (part..n_roots).step_by(threads).collect()).collect();
    let work: i64 = row_groups.iter().map(|&group| metadata.metadata().row_group(group).num_rows()).sum();
    let decoded = crate::threads::map_ordered(&projections, work as usize, |roots| {
        let input = reopen().map_err(|err| parquet::errors::ParquetError::External(Box::new(err)))?;
        let builder = ParquetRecordBatchReaderBuilder::new_with_metadata(input, metadata.clone());
        let mask = ProjectionMask::roots(builder.parquet_schema(), roots.iter().copied());
        let reader =
            builder.with_projection(mask).with_row_groups(row_groups.to_vec()).with_batch_size(batch_size).build()?;
        reader.collect::<Result<Vec<RecordBatch>, _>>().map_err(parquet::errors::ParquetError::from)
    });
    let parts: Vec<Vec<RecordBatch>> = decoded.into_iter().collect::<std::result::Result<_, _>>()?;
    Ok(zip_projections(metadata.schema(), &projections, &parts)?)
}

/// The batches of readers of disjoint column sets (`projections[p]`: the root columns of
/// `parts[p]`, ascending) joined into batches of the file's `schema`.
fn zip_projections(
    schema: &arrow::datatypes::SchemaRef,
    projections: &[Vec<usize>],
    parts: &[Vec<RecordBatch>],
) -> std::result::Result<Vec<RecordBatch>, arrow::error::ArrowError> {
    let n_batches = parts.first().map_or(0, Vec::len);
    if parts.iter().any(|part| part.len() != n_batches) {
        return Err(arrow::error::ArrowError::InvalidArgumentError("column readers disagree on batches".into()));
    }
    (0..n_batches)
        .map(|b| {
            let mut columns: Vec<Option<ArrayRef>> = vec![None; schema.fields().len()];
            for (roots, part) in projections.iter().zip(parts) {
                for (k, &root) in roots.iter().enumerate() {
                    columns[root] = Some(part[b].column(k).clone());
                }
            }
            RecordBatch::try_new(schema.clone(), columns.into_iter().flatten().collect())
        })
        .collect()
}

/// The row groups whose `ts` (and, for long files, `symbol`) statistics may hold selected rows.
fn pruned_row_groups(
    metadata: &parquet::file::metadata::ParquetMetaData,
    selection: &Selection,
    ts_column: Option<usize>,
    symbol_column: Option<usize>,
) -> Vec<usize> {
    let mut selected = Vec::new();
    for (index, group) in metadata.row_groups().iter().enumerate() {
        if let Some(column) = ts_column {
            if let Some(Statistics::Int64(s)) = group.column(column).statistics() {
                if let (Some(min), Some(max)) = (s.min_opt(), s.max_opt()) {
                    if !selection.overlaps(*min, *max) {
                        continue;
                    }
                }
            }
        }
        if let (Some(column), Some(wanted)) = (symbol_column, &selection.symbols) {
            if let Some(Statistics::ByteArray(s)) = group.column(column).statistics() {
                if let (Some(min), Some(max)) = (s.min_opt(), s.max_opt()) {
                    let (min, max) = (String::from_utf8_lossy(min.data()), String::from_utf8_lossy(max.data()));
                    if !wanted.iter().any(|w| w.as_str() >= min.as_ref() && w.as_str() <= max.as_ref()) {
                        continue;
                    }
                }
            }
        }
        selected.push(index);
    }
    selected
}

fn read_csv(path: &Path) -> Result<Vec<RecordBatch>> {
    let bad =
        |err: arrow::error::ArrowError| Error::format_from(format!("{}: not a valid CSV file", path.display()), err);
    let mut file = File::open(path).map_err(|err| Error::io(path.display(), err))?;
    let (schema, _) =
        arrow::csv::reader::Format::default().with_header(true).infer_schema(&mut file, Some(10_000)).map_err(&bad)?;
    file.rewind().map_err(|err| Error::io(path.display(), err))?;
    let reader = arrow::csv::ReaderBuilder::new(Arc::new(schema))
        .with_header(true)
        .with_batch_size(65_536)
        .build(file)
        .map_err(&bad)?;
    reader.collect::<Result<Vec<_>, _>>().map_err(bad)
}

/// Bars in canonical form: `names` sorted and all used, rows in (symbol, ts) order, stable (the
/// first of equal keys stays first). Already canonical bars are returned as they are; otherwise
/// rows are grouped by symbol with a counting sort and only out-of-order symbols are sorted by ts.
pub fn sort_bars(bars: Bars) -> Bars {
    let n_names = bars.names.len();
    let mut order: Vec<u32> = (0..n_names as u32).collect();
    order.sort_unstable_by(|&a, &b| bars.names[a as usize].cmp(&bars.names[b as usize]));
    let mut rank = vec![0u32; n_names];
    for (position, &code) in order.iter().enumerate() {
        rank[code as usize] = position as u32;
    }
    let mut counts = vec![0usize; n_names + 1];
    for &code in &bars.symbol {
        counts[rank[code as usize] as usize + 1] += 1;
    }
    let all_used = counts[1..].iter().all(|&n| n > 0);
    let identity = rank.iter().enumerate().all(|(code, &r)| code as u32 == r);
    let rows_sorted = (1..bars.len()).all(|r| {
        let (a, b) = (rank[bars.symbol[r - 1] as usize], rank[bars.symbol[r] as usize]);
        a < b || (a == b && bars.ts[r - 1] <= bars.ts[r])
    });
    if all_used && identity && rows_sorted {
        return bars;
    }
    // Start of each rank's rows, then a stable counting sort by rank.
    for k in 1..counts.len() {
        counts[k] += counts[k - 1];
    }
    let mut rows = vec![0usize; bars.len()];
    let mut next = counts.clone();
    for row in 0..bars.len() {
        let r = rank[bars.symbol[row] as usize] as usize;
        rows[next[r]] = row;
        next[r] += 1;
    }
    for r in 0..n_names {
        let segment = &mut rows[counts[r]..counts[r + 1]];
        if !segment.windows(2).all(|w| bars.ts[w[0]] <= bars.ts[w[1]]) {
            segment.sort_by_key(|&row| bars.ts[row]);
        }
    }
    // Codes become ranks among the used names.
    let used: Vec<u32> = (0..n_names as u32).filter(|&r| counts[r as usize + 1] > counts[r as usize]).collect();
    let mut dense = vec![0u32; n_names];
    for (position, &r) in used.iter().enumerate() {
        dense[r as usize] = position as u32;
    }
    let names = used.iter().map(|&r| bars.names[order[r as usize] as usize].clone()).collect();
    let mut sorted = take_rows(&bars, &rows);
    for code in sorted.symbol.iter_mut() {
        *code = dense[rank[*code as usize] as usize];
    }
    sorted.names = names;
    sorted
}

/// The rows `order` of `bars`, in that order.
pub fn take_rows(bars: &Bars, order: &[usize]) -> Bars {
    let pick = |v: &Vec<f64>| order.iter().map(|&r| v[r]).collect::<Vec<f64>>();
    Bars {
        ts: order.iter().map(|&r| bars.ts[r]).collect(),
        symbol: order.iter().map(|&r| bars.symbol[r]).collect(),
        names: bars.names.clone(),
        open: pick(&bars.open),
        high: pick(&bars.high),
        low: pick(&bars.low),
        close: pick(&bars.close),
        volume: pick(&bars.volume),
        turnover: bars.turnover.as_ref().map(pick),
    }
}

/// Append bars to the store: merge per symbol and year, new rows win on `ts`, files replaced atomically.
pub fn write_store(root: &Path, timeframe: Timeframe, bars: &Bars) -> Result<WriteStats> {
    write_store_of_kind(root, timeframe, bars, BarKind::Trade)
}

/// [`write_store`] for bars of `kind`: mark and index bars go to `kind=<kind>/` without volume.
pub fn write_store_of_kind(root: &Path, timeframe: Timeframe, bars: &Bars, kind: BarKind) -> Result<WriteStats> {
    let layout = StoreLayout::new(root);
    let mut groups: BTreeMap<(String, i32), Vec<usize>> = BTreeMap::new();
    for row in 0..bars.len() {
        groups.entry((bars.symbol_of(row).to_string(), year_of(bars.ts[row]))).or_default().push(row);
    }
    let mut stats = WriteStats::default();
    // One row group per year file: the year is already the unit of pruning (file names), and each
    // column chunk costs the decoder a fixed setup (a zstd context pair, when stores were zstd),
    // which dominated reading a store written with monthly row groups (12 per file). Older stores
    // with monthly groups read as before.
    let row_group = timeframe.bars_per_day() * 366;
    for ((symbol, year), rows) in groups {
        let path = layout.bar_file(timeframe, kind, &symbol, year);
        let mut merged: BTreeMap<i64, [f64; 6]> = BTreeMap::new();
        if path.exists() {
            let batches = read_parquet(&path, &Selection::all(timeframe), &mut ReadStats::default(), false)?;
            let old = bars_from_batches_with(&batches, &path.display().to_string(), Some(&symbol))?;
            for r in 0..old.len() {
                let turnover = old.turnover.as_ref().map_or(f64::NAN, |t| t[r]);
                merged.insert(old.ts[r], [old.open[r], old.high[r], old.low[r], old.close[r], old.volume[r], turnover]);
            }
        }
        for &r in &rows {
            let turnover = bars.turnover.as_ref().map_or(f64::NAN, |t| t[r]);
            let row = [bars.open[r], bars.high[r], bars.low[r], bars.close[r], bars.volume[r], turnover];
            match merged.insert(bars.ts[r], row) {
                Some(_) => stats.rows_replaced += 1,
                None => stats.rows_added += 1,
            }
        }
        let with_turnover = merged.values().any(|v| !v[5].is_nan());
        let mut fields = vec![Field::new("ts", DataType::Int64, false)];
        let names = ["open", "high", "low", "close", "volume", "turnover"];
        let n_values = match (kind.has_volume(), with_turnover) {
            (false, _) => 4,
            (true, true) => 6,
            (true, false) => 5,
        };
        fields.extend(names[..n_values].iter().map(|n| Field::new(*n, DataType::Float64, false)));
        let mut columns: Vec<ArrayRef> = vec![Arc::new(Int64Array::from_iter_values(merged.keys().copied()))];
        for k in 0..n_values {
            columns.push(Arc::new(Float64Array::from_iter_values(merged.values().map(|v| v[k]))));
        }
        let batch = RecordBatch::try_new(Arc::new(Schema::new(fields)), columns).expect("columns match");
        write_parquet_atomically(&path, &batch, row_group)?;
        stats.files_written += 1;
    }
    Ok(stats)
}

/// Append funding events to `<root>/funding/symbol=<SYM>/<year>.parquet` (new rows win on `ts`).
pub fn write_funding_store(root: &Path, funding: &Funding) -> Result<WriteStats> {
    let layout = StoreLayout::new(root);
    let mut groups: BTreeMap<(String, i32), Vec<usize>> = BTreeMap::new();
    for row in 0..funding.ts.len() {
        groups.entry((funding.symbol_of(row).to_string(), year_of(funding.ts[row]))).or_default().push(row);
    }
    let mut stats = WriteStats::default();
    for ((symbol, year), rows) in groups {
        let path = layout.funding_file(&symbol, year);
        let mut merged: BTreeMap<i64, f64> = BTreeMap::new();
        if path.exists() {
            let selection = Selection::all(Timeframe::from_ms(MS_PER_DAY));
            let batches = read_parquet(&path, &selection, &mut ReadStats::default(), false)?;
            let old = funding_from_batches_with(&batches, &path.display().to_string(), Some(&symbol))?;
            merged.extend(old.ts.iter().copied().zip(old.rate.iter().copied()));
        }
        for &r in &rows {
            match merged.insert(funding.ts[r], funding.rate[r]) {
                Some(_) => stats.rows_replaced += 1,
                None => stats.rows_added += 1,
            }
        }
        let schema =
            Schema::new(vec![Field::new("ts", DataType::Int64, false), Field::new("rate", DataType::Float64, false)]);
        let batch = RecordBatch::try_new(
            Arc::new(schema),
            vec![
                Arc::new(Int64Array::from_iter_values(merged.keys().copied())),
                Arc::new(Float64Array::from_iter_values(merged.values().copied())),
            ],
        )
        .expect("columns match");
        write_parquet_atomically(&path, &batch, 4_096)?;
        stats.files_written += 1;
    }
    Ok(stats)
}

/// The codec of every Parquet file xsmom writes. Snappy, not zstd: parquet-rs sets up a fresh zstd
/// context pair (a compressor too, ~20 µs each) for every column chunk it reads, and a store is many
/// small column chunks (a year file of one symbol has six), so a zstd store of the fixture's 32
/// symbols read 2.2× slower than the same store in Snappy (25.7 vs 11.7 ms); its files (numbers
/// without a dictionary) are 19 % larger (docs/decisions.md "Store files are Snappy").
pub const STORE_CODEC: Compression = Compression::SNAPPY;

/// Write a Parquet file ([`STORE_CODEC`]) with row-group statistics, atomically
/// ([`crate::fsutil::write_atomically_with`]): a failure leaves the old file untouched.
pub fn write_parquet_atomically(path: &Path, batch: &RecordBatch, row_group_rows: usize) -> Result<()> {
    crate::fsutil::write_atomically_with(path, |file, temp| {
        let mut props = WriterProperties::builder()
            .set_compression(STORE_CODEC)
            .set_statistics_enabled(EnabledStatistics::Chunk)
            .set_max_row_group_row_count(Some(row_group_rows.max(1)));
        // Numbers are stored plain: prices and timestamps rarely repeat, so a dictionary only adds
        // a gather to the decode (the fixture store: 15 % smaller and a little faster without).
        for field in
            batch.schema().fields().iter().filter(|f| f.data_type().is_numeric() || f.data_type().is_temporal())
        {
            props = props.set_column_dictionary_enabled(ColumnPath::from(field.name().as_str()), false);
        }
        let props = props.build();
        let failed = |err: parquet::errors::ParquetError| Error::io(temp.display(), err);
        let mut writer = ArrowWriter::try_new(file, batch.schema(), Some(props)).map_err(failed)?;
        writer.write(batch).map_err(failed)?;
        writer.into_inner().map_err(failed)?.flush().map_err(|err| Error::io(temp.display(), err))
    })
}

/// Rewrite every Parquet file of a store (`bars/` of every timeframe and kind, `funding/`) that is not in
/// [`STORE_CODEC`], each atomically, with its own schema, rows and row-group size: a store written
/// by an earlier version (zstd) reads as fast as a new one. Files already in the codec are left as
/// they are; a file that cannot be read is an error naming it, and the files before it stay
/// rewritten (each rewrite is complete on its own).
pub fn compact_store(root: &Path) -> Result<WriteStats> {
    if !root.is_dir() {
        return Err(Error::invalid(format!("{}: not a store directory", root.display())));
    }
    let mut stats = WriteStats::default();
    let layout = StoreLayout::new(root);
    let mut files = Vec::new();
    for dir in [layout.bars(), layout.funding()].into_iter().filter(|dir| dir.is_dir()) {
        files.extend(parquet_files_under(&dir)?);
    }
    for path in files {
        let file = File::open(&path).map_err(|err| Error::io(path.display(), err))?;
        let corrupt = |err: Box<dyn std::error::Error + Send + Sync>| {
            Error::format_from(format!("{}: not a valid Parquet file", path.display()), err)
        };
        let builder = ParquetRecordBatchReaderBuilder::try_new(file).map_err(|err| corrupt(err.into()))?;
        let metadata = builder.metadata().clone();
        let columns = metadata.row_groups().iter().flat_map(|group| group.columns());
        if columns.clone().next().is_none() || columns.into_iter().all(|c| c.compression() == STORE_CODEC) {
            continue;
        }
        let group_rows = metadata.row_groups().iter().map(|g| g.num_rows()).max().unwrap_or(1).max(1);
        let schema = builder.schema().clone();
        let reader = builder.build().map_err(|err| corrupt(err.into()))?;
        let batches = reader.collect::<Result<Vec<_>, _>>().map_err(|err| corrupt(err.into()))?;
        let batch = arrow::compute::concat_batches(&schema, &batches).map_err(|err| corrupt(err.into()))?;
        write_parquet_atomically(&path, &batch, group_rows as usize)?;
        stats.files_written += 1;
    }
    Ok(stats)
}

/// The `.parquet` files under `dir`, at any depth, in path order.
fn parquet_files_under(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in fs::read_dir(&dir).map_err(|err| Error::io(dir.display(), err))? {
            let path = entry.map_err(|err| Error::io(dir.display(), err))?.path();
            if path.is_dir() {
                pending.push(path);
            } else if extension(&path) == "parquet" {
                files.push(path);
            }
        }
    }
    files.sort();
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calendar_years() {
        assert_eq!(year_start_ms(1970), 0);
        assert_eq!(year_start_ms(2025), 1_735_689_600_000);
        assert_eq!(year_of(1_735_689_600_000), 2025);
        assert_eq!(year_of(1_735_689_599_999), 2024);
        assert_eq!(year_start_ms(2024) + 366 * MS_PER_DAY, year_start_ms(2025));
    }

    /// A long file with nulls and several row groups, decoded column-parallel in many small batches,
    /// equals the single reader's decode of the whole file.
    #[test]
    fn column_parallel_read_equals_the_single_reader() {
        use arrow::array::StringArray;
        let rows = 25_000usize;
        let symbols = ["AAA", "BBBB", "C"];
        let batch = RecordBatch::try_from_iter(vec![
            ("ts", Arc::new(Int64Array::from_iter_values((0..rows as i64).map(|i| i * 3_600_000))) as ArrayRef),
            ("symbol", Arc::new(StringArray::from_iter_values((0..rows).map(|i| symbols[i % 3]))) as ArrayRef),
            ("open", Arc::new(Float64Array::from_iter((0..rows).map(|i| (i % 7 != 0).then_some(i as f64))))),
            ("close", Arc::new(Float64Array::from_iter_values((0..rows).map(|i| (i as f64).sin())))),
            ("volume", Arc::new(Float64Array::from_iter((0..rows).map(|i| (i % 5 != 0).then_some(0.5 * i as f64))))),
        ])
        .expect("columns match");
        let dir = std::env::temp_dir().join(format!("xsmom-column-parallel-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let path = dir.join("bars.parquet");
        write_parquet_atomically(&path, &batch, 7_000).expect("written");
        let file = File::open(&path).expect("opened");
        let metadata = ArrowReaderMetadata::load(&file, ArrowReaderOptions::new()).expect("metadata");
        let all_groups: Vec<usize> = (0..metadata.metadata().num_row_groups()).collect();
        assert_eq!(all_groups.len(), 4);
        let single: Vec<RecordBatch> = ParquetRecordBatchReaderBuilder::new_with_metadata(file, metadata.clone())
            .with_batch_size(rows)
            .build()
            .expect("reader")
            .collect::<std::result::Result<_, _>>()
            .expect("decoded");
        for (groups, threads) in [(all_groups.clone(), 2), (all_groups.clone(), 3), (vec![1, 3], 2)] {
            let parallel =
                read_columns_in_parallel(|| File::open(&path), &metadata, &groups, 999, threads).expect("decoded");
            assert!(parallel.len() > 1, "several batches");
            let joined = arrow::compute::concat_batches(&parallel[0].schema(), &parallel).expect("concat");
            assert_eq!(joined.schema(), batch.schema());
            let expected = if groups.len() == all_groups.len() {
                single[0].clone()
            } else {
                let wanted: Vec<RecordBatch> =
                    groups.iter().map(|&g| single[0].slice(g * 7_000, 7_000.min(rows - g * 7_000))).collect();
                arrow::compute::concat_batches(&batch.schema(), &wanted).expect("concat")
            };
            assert_eq!(joined, expected, "groups {groups:?} on {threads} threads");
        }
        // The file read into memory first (it is small), decoded on both cores, and read from disk.
        let selection = Selection::all(Timeframe::from_ms(3_600_000));
        let read = read_parquet(&path, &selection, &mut ReadStats::default(), true).expect("read");
        let joined = arrow::compute::concat_batches(&batch.schema(), &read).expect("concat");
        assert_eq!(joined, single[0]);
        let from_disk =
            |file: File| decode_parquet(&path, file, || File::open(&path), &selection, &mut ReadStats::default(), true);
        let read = from_disk(File::open(&path).expect("opened")).expect("read");
        assert_eq!(arrow::compute::concat_batches(&batch.schema(), &read).expect("concat"), single[0]);
        std::fs::remove_dir_all(&dir).ok();
    }

    fn codecs(path: &Path) -> Vec<Compression> {
        let file = File::open(path).expect("opened");
        let metadata = ArrowReaderMetadata::load(&file, ArrowReaderOptions::new()).expect("metadata");
        metadata.metadata().row_groups().iter().flat_map(|g| g.columns().iter().map(|c| c.compression())).collect()
    }

    /// A store written now is in the store codec; a zstd file of an earlier version is rewritten by
    /// `compact_store` with the same schema, rows and row groups, the rest left alone; a file that is
    /// not Parquet is an error naming it.
    #[test]
    fn compaction_rewrites_files_of_another_codec() {
        use parquet::basic::ZstdLevel;
        let root = std::env::temp_dir().join(format!("xsmom-compact-{}", std::process::id()));
        std::fs::remove_dir_all(&root).ok();
        let timeframe = Timeframe::from_ms(3_600_000);
        let n = 5_000usize;
        let bars = Bars {
            ts: (0..n as i64).map(|i| year_start_ms(2025) + i * timeframe.ms).collect(),
            symbol: vec![0; n],
            names: vec!["AAAUSDT".into()],
            open: (0..n).map(|i| 100.0 + (i as f64).sin()).collect(),
            high: (0..n).map(|i| 101.0 + (i as f64).sin()).collect(),
            low: (0..n).map(|i| 99.0 + (i as f64).sin()).collect(),
            close: (0..n).map(|i| 100.5 + (i as f64).sin()).collect(),
            volume: (0..n).map(|i| i as f64).collect(),
            turnover: None,
        };
        write_store(&root, timeframe, &bars).expect("store written");
        let fresh = StoreLayout::new(&root).bar_file(timeframe, BarKind::Trade, "AAAUSDT", 2025);
        assert!(codecs(&fresh).iter().all(|&c| c == STORE_CODEC), "{:?}", codecs(&fresh));
        // A file as an earlier version wrote it: zstd, 1 000-row groups.
        let old = StoreLayout::new(&root).bar_file(timeframe, BarKind::Trade, "BBBUSDT", 2025);
        std::fs::create_dir_all(old.parent().expect("a parent")).expect("dir");
        let batch = RecordBatch::try_from_iter(vec![
            ("ts", Arc::new(Int64Array::from_iter_values(bars.ts.iter().copied())) as ArrayRef),
            ("close", Arc::new(Float64Array::from_iter_values(bars.close.iter().copied())) as ArrayRef),
        ])
        .expect("columns match");
        let props = WriterProperties::builder()
            .set_compression(Compression::ZSTD(ZstdLevel::try_new(3).expect("level")))
            .set_max_row_group_row_count(Some(1_000))
            .build();
        let mut writer =
            ArrowWriter::try_new(File::create(&old).expect("created"), batch.schema(), Some(props)).expect("writer");
        writer.write(&batch).expect("written");
        writer.close().expect("closed");
        let before = read_parquet(&old, &Selection::all(timeframe), &mut ReadStats::default(), false).expect("read");
        let fresh_bytes = std::fs::read(&fresh).expect("read");

        assert_eq!(compact_store(&root).expect("compacted").files_written, 1);
        assert!(codecs(&old).iter().all(|&c| c == STORE_CODEC), "{:?}", codecs(&old));
        assert_eq!(codecs(&old).len(), 5 * 2, "five row groups of two columns, as before");
        let after = read_parquet(&old, &Selection::all(timeframe), &mut ReadStats::default(), false).expect("read");
        assert_eq!(before, after);
        assert_eq!(std::fs::read(&fresh).expect("read"), fresh_bytes, "a file in the codec is left alone");
        assert_eq!(compact_store(&root).expect("compacted").files_written, 0);

        std::fs::write(&old, b"not parquet").expect("written");
        let err = compact_store(&root).expect_err("a broken file").to_string();
        assert!(err.contains("BBBUSDT") && err.contains("not a valid Parquet file"), "{err}");
        std::fs::remove_dir_all(&root).ok();
    }
}
