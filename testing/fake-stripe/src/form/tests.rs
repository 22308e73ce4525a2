use super::*;

fn tree(text: &str) -> Param {
    parse(&pairs(text).unwrap()).unwrap()
}

#[test]
fn nested_keys_arrays_and_maps_build_one_tree() {
    let p = tree("a[b][0][c]=1&a[b][1][c]=2&list[]=x&list[]=y&metadata[k]=v&flat=f");
    let b = p.get("a").unwrap().get("b").unwrap().items().unwrap();
    assert_eq!(b.len(), 2);
    assert_eq!(b[1].str("c"), Some("2"));
    assert_eq!(p.strings("list"), vec!["x", "y"]);
    assert_eq!(p.string_map("metadata").unwrap()["k"], "v");
    assert_eq!(p.str("flat"), Some("f"));
}

#[test]
fn indexes_sort_numerically_not_as_text() {
    let text: String = (0..12).map(|i| format!("e[{i}]=v{i}&")).collect();
    assert_eq!(tree(&text).strings("e")[10], "v10");
}

#[test]
fn empty_value_is_unset() {
    let p = tree("metadata=&x=");
    assert!(p.is_unset("metadata"));
    assert_eq!(p.str("x"), None);
}

#[test]
fn a_key_both_value_and_hash_is_rejected() {
    assert!(matches!(
        parse(&pairs("a=1&a[b]=2").unwrap()),
        Err(Error::Shape { .. })
    ));
    assert!(matches!(
        parse(&pairs("a[b=2").unwrap()),
        Err(Error::Brackets { .. })
    ));
}

#[test]
fn canonical_ignores_order() {
    let a = pairs("b=2&a=1").unwrap();
    let b = pairs("a=1&b=2").unwrap();
    assert_eq!(canonical(&a), canonical(&b));
    assert_ne!(canonical(&a), canonical(&pairs("a=1&b=3").unwrap()));
}
