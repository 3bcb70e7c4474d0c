//! A row's cells in the export's column order, straight from its `Serialize` impl.
//!
//! Exports used to turn every row into a `serde_json::Map` (a B-tree keyed by owned strings)
//! and look each column up in it: 28 key allocations, 28 tree inserts and 28 lookups per row,
//! about a fifth of the encoder thread's time. Serde hands a struct's fields over in
//! declaration order with `&'static` names, so a picker learns on the first row which field
//! lands in which column and afterwards only checks that each name is the one it expects.

use serde::ser::{self, Impossible, Serialize, SerializeStruct};
use serde_json::Value;

/// Picks the cells of `columns` out of rows that serialize as structs.
pub struct CellPicker {
    columns: Vec<&'static str>,
    /// For the n-th field serialized: its name and the column it fills (`None`: not exported).
    learned: Vec<(&'static str, Option<usize>)>,
}

impl CellPicker {
    /// A picker for these columns, in this order.
    pub fn new(columns: Vec<&'static str>) -> CellPicker {
        CellPicker {
            columns,
            learned: Vec::new(),
        }
    }

    /// The row's cells in column order; a column the row has no field for is `null`.
    ///
    /// # Panics
    /// When `row` does not serialize as a struct (a programming error: exports are of
    /// struct rows).
    pub fn cells<T: Serialize>(&mut self, row: &T) -> Vec<Value> {
        let mut sink = Sink {
            picker: self,
            cells: Vec::new(),
            field: 0,
        };
        sink.cells.resize(sink.picker.columns.len(), Value::Null);
        row.serialize(&mut sink)
            .expect("export rows serialize as structs");
        sink.cells
    }

    /// The column `name` fills, learned at field position `field`.
    fn column_of(&mut self, field: usize, name: &'static str) -> Option<usize> {
        if let Some(&(known, column)) = self.learned.get(field)
            && (std::ptr::eq(known, name) || known == name)
        {
            return column;
        }
        let column = self.columns.iter().position(|c| *c == name);
        if field < self.learned.len() {
            self.learned[field] = (name, column);
        } else {
            self.learned.push((name, column));
        }
        column
    }
}

/// The serializer a row is fed to: it accepts one struct and nothing else.
struct Sink<'a> {
    picker: &'a mut CellPicker,
    cells: Vec<Value>,
    field: usize,
}

impl SerializeStruct for &mut Sink<'_> {
    type Ok = ();
    type Error = serde_json::Error;

    fn serialize_field<T: ?Sized + Serialize>(
        &mut self,
        key: &'static str,
        value: &T,
    ) -> Result<(), Self::Error> {
        let field = self.field;
        self.field += 1;
        if let Some(column) = self.picker.column_of(field, key) {
            self.cells[column] = serde_json::to_value(value)?;
        }
        Ok(())
    }

    fn skip_field(&mut self, _key: &'static str) -> Result<(), Self::Error> {
        // A skipped field keeps its position, so the fields after it keep theirs.
        self.field += 1;
        Ok(())
    }

    fn end(self) -> Result<(), Self::Error> {
        Ok(())
    }
}

fn not_a_struct() -> serde_json::Error {
    ser::Error::custom("an export row must serialize as a struct")
}

/// Every serializer method but `serialize_struct` refuses.
macro_rules! refuse {
    ($($method:ident($($arg:ty),*);)*) => {
        $(fn $method(self, $(_: $arg),*) -> Result<(), serde_json::Error> {
            Err(not_a_struct())
        })*
    };
}

impl<'a, 'b> ser::Serializer for &'a mut Sink<'b> {
    type Ok = ();
    type Error = serde_json::Error;
    type SerializeSeq = Impossible<(), serde_json::Error>;
    type SerializeTuple = Impossible<(), serde_json::Error>;
    type SerializeTupleStruct = Impossible<(), serde_json::Error>;
    type SerializeTupleVariant = Impossible<(), serde_json::Error>;
    type SerializeMap = Impossible<(), serde_json::Error>;
    type SerializeStruct = Self;
    type SerializeStructVariant = Impossible<(), serde_json::Error>;

    fn serialize_struct(
        self,
        _name: &'static str,
        _len: usize,
    ) -> Result<Self::SerializeStruct, Self::Error> {
        Ok(self)
    }

    refuse! {
        serialize_bool(bool); serialize_i8(i8); serialize_i16(i16); serialize_i32(i32);
        serialize_i64(i64); serialize_u8(u8); serialize_u16(u16); serialize_u32(u32);
        serialize_u64(u64); serialize_f32(f32); serialize_f64(f64); serialize_char(char);
        serialize_str(&str); serialize_bytes(&[u8]); serialize_none(); serialize_unit();
        serialize_unit_struct(&'static str);
        serialize_unit_variant(&'static str, u32, &'static str);
    }

    fn serialize_some<T: ?Sized + Serialize>(self, _: &T) -> Result<(), Self::Error> {
        Err(not_a_struct())
    }

    fn serialize_newtype_struct<T: ?Sized + Serialize>(
        self,
        _: &'static str,
        _: &T,
    ) -> Result<(), Self::Error> {
        Err(not_a_struct())
    }

    fn serialize_newtype_variant<T: ?Sized + Serialize>(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: &T,
    ) -> Result<(), Self::Error> {
        Err(not_a_struct())
    }

    fn serialize_seq(self, _: Option<usize>) -> Result<Self::SerializeSeq, Self::Error> {
        Err(not_a_struct())
    }

    fn serialize_tuple(self, _: usize) -> Result<Self::SerializeTuple, Self::Error> {
        Err(not_a_struct())
    }

    fn serialize_tuple_struct(
        self,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeTupleStruct, Self::Error> {
        Err(not_a_struct())
    }

    fn serialize_tuple_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeTupleVariant, Self::Error> {
        Err(not_a_struct())
    }

    fn serialize_map(self, _: Option<usize>) -> Result<Self::SerializeMap, Self::Error> {
        Err(not_a_struct())
    }

    fn serialize_struct_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeStructVariant, Self::Error> {
        Err(not_a_struct())
    }
}

#[cfg(test)]
mod tests {
    use serde::Serialize;
    use serde_json::json;

    use super::CellPicker;

    #[derive(Serialize)]
    struct Row {
        id: u32,
        name: Option<String>,
        tags: Vec<&'static str>,
        #[serde(skip_serializing_if = "Option::is_none")]
        note: Option<&'static str>,
    }

    /// Cells equal what the row's JSON object holds under each column, in column order,
    /// including when a skipped field shifts the fields after it between rows.
    #[test]
    fn cells_are_the_json_members_in_column_order() {
        let mut picker = CellPicker::new(vec!["tags", "note", "id", "missing"]);
        let rows = [
            Row {
                id: 1,
                name: Some("a".into()),
                tags: vec!["x"],
                note: Some("n"),
            },
            Row {
                id: 2,
                name: None,
                tags: vec![],
                note: None,
            },
            Row {
                id: 3,
                name: Some("c".into()),
                tags: vec!["y", "z"],
                note: Some("m"),
            },
        ];
        for row in &rows {
            let object = serde_json::to_value(row).unwrap();
            let want: Vec<_> = ["tags", "note", "id", "missing"]
                .iter()
                .map(|c| object.get(*c).cloned().unwrap_or(json!(null)))
                .collect();
            assert_eq!(picker.cells(row), want);
        }
    }
}
