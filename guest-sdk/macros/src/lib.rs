//! `#[opzero_guest_sdk::config]`: derive serde's `Deserialize` through the
//! SDK's own serde, so a filter crate needs no serde dependency of its own.
//!
//! Written against `proc_macro` alone: the attribute only checks what it is
//! attached to and prepends two attributes, which needs no parser.

use proc_macro::{Delimiter, Group, Ident, Literal, Punct, Spacing, Span, TokenStream, TokenTree};

const WHERE: &str = "#[opzero_guest_sdk::config] goes on the struct that holds your [filter.config] keys (or on an enum used inside it)";

/// Marks the type that `[filter.config]` deserializes into.
///
/// On a struct it expands to `#[derive(Deserialize)]` plus
/// `#[serde(deny_unknown_fields)]`, so a misspelt key in `opzero.toml` is an
/// error naming the key. On an enum it only derives. Field attributes such
/// as `#[serde(default)]` work as usual.
#[proc_macro_attribute]
pub fn config(attr: TokenStream, item: TokenStream) -> TokenStream {
    if let Some(first) = attr.into_iter().next() {
        return compile_error(
            first.span(),
            "#[opzero_guest_sdk::config] takes no arguments; put serde options in a #[serde(...)] line below it",
        );
    }
    let kind = match item_kind(&item) {
        Ok(kind) => kind,
        Err(span) => return compile_error(span, WHERE),
    };
    let serde_options = match kind {
        Kind::Struct => "crate = \"::opzero_guest_sdk::serde\", deny_unknown_fields",
        Kind::Enum => "crate = \"::opzero_guest_sdk::serde\"",
    };
    let prefix: TokenStream =
        format!("#[derive(::opzero_guest_sdk::serde::Deserialize)] #[serde({serde_options})]")
            .parse()
            .expect("static attribute text parses");
    let mut out = prefix;
    out.extend(item);
    out
}

enum Kind {
    Struct,
    Enum,
}

/// Skips outer attributes and visibility; returns what is declared, or the
/// span of the first token that shows it is not a struct or enum.
fn item_kind(item: &TokenStream) -> Result<Kind, Span> {
    let mut tokens = item.clone().into_iter().peekable();
    while let Some(token) = tokens.next() {
        match &token {
            TokenTree::Punct(p) if p.as_char() == '#' => {
                // `#[...]`: the bracket group follows.
                tokens.next();
            }
            TokenTree::Ident(i) if i.to_string() == "pub" => {
                if let Some(TokenTree::Group(g)) = tokens.peek()
                    && g.delimiter() == Delimiter::Parenthesis
                {
                    tokens.next();
                }
            }
            TokenTree::Ident(i) if i.to_string() == "struct" => return Ok(Kind::Struct),
            TokenTree::Ident(i) if i.to_string() == "enum" => return Ok(Kind::Enum),
            other => return Err(other.span()),
        }
    }
    Err(Span::call_site())
}

/// `::core::compile_error!("message")`, pointing at `span`.
fn compile_error(span: Span, message: &str) -> TokenStream {
    let colons = |spacing| {
        let mut p = Punct::new(':', spacing);
        p.set_span(span);
        TokenTree::Punct(p)
    };
    let tokens = vec![
        colons(Spacing::Joint),
        colons(Spacing::Alone),
        TokenTree::Ident(Ident::new("core", span)),
        colons(Spacing::Joint),
        colons(Spacing::Alone),
        TokenTree::Ident(Ident::new("compile_error", span)),
        {
            let mut bang = Punct::new('!', Spacing::Alone);
            bang.set_span(span);
            TokenTree::Punct(bang)
        },
        {
            let mut lit = Literal::string(message);
            lit.set_span(span);
            let mut group = Group::new(
                Delimiter::Parenthesis,
                TokenStream::from(TokenTree::Literal(lit)),
            );
            group.set_span(span);
            TokenTree::Group(group)
        },
        {
            let mut semi = Punct::new(';', Spacing::Alone);
            semi.set_span(span);
            TokenTree::Punct(semi)
        },
    ];
    tokens.into_iter().collect()
}
