//! Unit tests of `admin` (kept beside it; compiled only for tests).

use super::*;

#[test]
fn the_openapi_document_lists_exactly_the_routes_with_strict_schemas() {
    let errs = server::openapi::problems(OPENAPI, ROUTES);
    assert!(errs.is_empty(), "{errs:#?}");
}
