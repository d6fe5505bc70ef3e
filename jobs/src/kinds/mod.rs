//! The kinds Conveyor ships. Adding a kind is one module here plus one line in
//! [`catalog`] (and one in the worker's registry wiring).

pub mod noop;
pub mod testing;

use crate::registry::Catalog;

/// Every shipped kind, for intake validation.
pub fn catalog() -> Catalog {
    let mut catalog = Catalog::new();
    // Kinds are distinct constants; a duplicate here is a programming error caught by
    // the unit test below.
    catalog
        .add::<noop::Noop>()
        .expect("shipped kinds are distinct");
    catalog
}

#[cfg(test)]
mod tests {
    #[test]
    fn shipped_catalog_builds() {
        assert!(super::catalog().kinds().contains(&"noop"));
    }
}
