//! No import circles in host/src (issue 19, part 4): no two modules use each
//! other, neither a parent and its child nor round a longer loop.
//!
//! The modules: lib.rs's tree of `mod x;` (x.rs, x/mod.rs) and `mod x { }`
//! without `#[cfg(test)]` ones, and main.rs, which names the library
//! `opzero_host::`. A module uses another when a path it writes (in a `use`,
//! an expression or a type) names it through `crate::`, `super::`, `self::`,
//! a child module or a module a `use` brought in: the deepest module the path
//! names that it may see (hub's `bridge::error` is a function: bridge's `mod
//! error` is private). syn reads a macro's arguments when they are
//! expressions (`format!`); `json!`, `select!` and `macro_rules!` are opaque.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use syn::visit::{self, Visit};
use syn::{Item, UseTree, Visibility};

/// A path a module writes: its segments, and the name it binds if a `use`.
type Ref = (Vec<String>, Option<String>);

#[derive(Default)]
struct Module {
    name: String,
    file: PathBuf,
    parent: Option<usize>,
    /// Named only from within this module (None: from anywhere).
    scope: Option<usize>,
    children: BTreeMap<String, usize>,
    refs: Vec<Ref>,
}

struct Graph {
    src: PathBuf,
    modules: Vec<Module>,
    /// (user, used) and an example: the file and the path.
    edges: BTreeMap<(usize, usize), String>,
}

/// A module's refs: what visiting its own items (not its child modules) finds.
impl<'a> Visit<'a> for Module {
    fn visit_item_use(&mut self, u: &'a syn::ItemUse) {
        if u.leading_colon.is_none() {
            flatten(&u.tree, vec![], &mut self.refs);
        }
    }
    fn visit_path(&mut self, p: &'a syn::Path) {
        if p.leading_colon.is_none() && p.segments.len() > 1 {
            self.refs.push((p.segments.iter().map(|s| s.ident.to_string()).collect(), None));
        }
        visit::visit_path(self, p);
    }
    fn visit_macro(&mut self, m: &'a syn::Macro) {
        let args = m.parse_body_with(syn::punctuated::Punctuated::<syn::Expr, syn::Token![,]>::parse_terminated);
        args.iter().flatten().for_each(|e| self.visit_expr(e));
        visit::visit_macro(self, m);
    }
    /// `pub(super)` names a module but does not use it.
    fn visit_visibility(&mut self, _: &'a Visibility) {}
}

fn parse(path: &Path) -> syn::File {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    syn::parse_file(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// `use a::{b, c::d as e, f::*}` as the paths a::b (binds b), a::c::d (binds e), a::f.
fn flatten(tree: &UseTree, mut prefix: Vec<String>, out: &mut Vec<Ref>) {
    let (ident, binds) = match tree {
        UseTree::Path(p) => {
            prefix.push(p.ident.to_string());
            return flatten(&p.tree, prefix, out);
        }
        UseTree::Group(g) => return g.items.iter().for_each(|t| flatten(t, prefix.clone(), out)),
        UseTree::Glob(_) => return out.push((prefix, None)),
        UseTree::Name(n) => (&n.ident, None),
        UseTree::Rename(r) => (&r.ident, Some(r.rename.to_string())),
    };
    if ident != "self" {
        prefix.push(ident.to_string());
    }
    let binds = binds.or_else(|| prefix.last().cloned()).filter(|b| b != "_");
    out.push((prefix, binds));
}

impl Graph {
    /// The modules of `src` (lib.rs, and main.rs if there is one) and the edges between them.
    fn load(src: &Path, lib_name: &str) -> Graph {
        let mut g = Graph { src: src.into(), modules: vec![], edges: BTreeMap::new() };
        for (file, name) in [("lib.rs", "crate"), ("main.rs", "main")] {
            if file == "lib.rs" || src.join(file).is_file() {
                g.add(Path::new(file), name.into(), None, &Visibility::Inherited, &parse(&src.join(file)).items, Path::new(""));
            }
        }
        for (m, module) in g.modules.iter().enumerate() {
            for (segs, _) in &module.refs {
                if let Some((used, _)) = g.resolve(m, segs, lib_name)
                    && used != m
                {
                    g.edges.entry((m, used)).or_insert_with(|| format!("{}: {}", module.file.display(), segs.join("::")));
                }
            }
        }
        g
    }

    /// Adds the module of `items` (in `file`) and its children, whose files
    /// are in `dir` (like `file`, relative to src).
    fn add(&mut self, file: &Path, name: String, parent: Option<usize>, vis: &Visibility, items: &[Item], dir: &Path) -> usize {
        let id = self.modules.len();
        let scope = parent.and_then(|p| match vis {
            Visibility::Public(_) => None,
            Visibility::Restricted(r) if r.path.is_ident("super") => self.ancestors(p).nth(1).or(Some(p)),
            Visibility::Restricted(r) if !r.path.is_ident("self") => self.ancestors(p).last(), // crate, in path
            _ => Some(p),
        });
        self.modules.push(Module { name, file: file.to_path_buf(), parent, scope, ..Default::default() });
        for item in items {
            let Item::Mod(m) = item else {
                self.modules[id].visit_item(item);
                continue;
            };
            let cfg_test = |a: &syn::Attribute| a.path().is_ident("cfg") && a.meta.require_list().is_ok_and(|l| l.tokens.to_string() == "test");
            if m.attrs.iter().any(cfg_test) {
                continue;
            }
            let short = m.ident.to_string();
            let full = if id == 0 { short.clone() } else { format!("{}::{short}", self.modules[id].name) };
            let child_dir = dir.join(&short);
            let child = match &m.content {
                Some((_, inline)) => self.add(file, full, Some(id), &m.vis, inline, &child_dir),
                None => {
                    let candidates = [dir.join(format!("{short}.rs")), child_dir.join("mod.rs")];
                    let found = candidates.into_iter().find(|f| self.src.join(f).is_file());
                    let f = found.unwrap_or_else(|| panic!("{}: no file for mod {short}", file.display()));
                    self.add(&f, full, Some(id), &m.vis, &parse(&self.src.join(&f)).items, &child_dir)
                }
            };
            self.modules[id].children.insert(short, child);
        }
        id
    }

    /// `m`, its parent, its parent's parent, ... up to lib.rs or main.rs.
    fn ancestors(&self, m: usize) -> impl Iterator<Item = usize> + '_ {
        std::iter::successors(Some(m), |&m| self.modules[m].parent)
    }

    /// The deepest module that `segs`, written in module `m`, names, and
    /// whether all of `segs` is modules. None: not a path into this crate.
    fn resolve(&self, m: usize, segs: &[String], lib_name: &str) -> Option<(usize, bool)> {
        let here = &self.modules[m];
        let mut at = match segs[0].as_str() {
            "crate" => self.ancestors(m).last()?,
            "self" => m,
            "super" => here.parent?,
            head if head == lib_name && self.ancestors(m).last() != Some(0) => 0,
            head => match here.children.get(head) {
                Some(&child) => child,
                // A module a `use` brought in (not `use a::b as a`: it would loop).
                None => here.refs.iter().filter(|(s, binds)| binds.as_deref() == Some(head) && s[0] != head)
                    .find_map(|(s, _)| self.resolve(m, s, lib_name).filter(|&(_, all)| all))?.0,
            },
        };
        for seg in &segs[1..] {
            let next = match seg.as_str() {
                "self" => Some(at),
                "super" => self.modules[at].parent,
                s => self.modules[at].children.get(s).copied(),
            };
            match next {
                Some(n) if self.modules[n].scope.is_none_or(|s| self.ancestors(m).any(|a| a == s)) => at = n,
                _ => return Some((at, false)),
            }
        }
        Some((at, true))
    }

    /// The strongly connected sets of more than one module, by their names.
    fn circles(&self) -> BTreeSet<Vec<&str>> {
        let reach: Vec<BTreeSet<usize>> = (0..self.modules.len())
            .map(|from| {
                let (mut seen, mut todo) = (BTreeSet::from([from]), vec![from]);
                while let Some(v) = todo.pop() {
                    todo.extend(self.edges.range((v, 0)..(v + 1, 0)).map(|(&(_, w), _)| w).filter(|&w| seen.insert(w)));
                }
                seen
            })
            .collect();
        let circle = |v: usize| reach[v].iter().filter(|&&w| reach[w].contains(&v)).map(|&w| self.modules[w].name.as_str()).collect::<Vec<_>>();
        (0..self.modules.len()).map(circle).filter(|c| c.len() > 1).collect()
    }

    /// The edges within `circle`, each with an example.
    fn report(&self, circle: &[&str]) -> String {
        let mut out = format!("circle: {}\n", circle.join(", "));
        for (&(a, b), example) in &self.edges {
            let (a, b) = (self.modules[a].name.as_str(), self.modules[b].name.as_str());
            if circle.contains(&a) && circle.contains(&b) {
                out += &format!("  {a} -> {b}   ({example})\n");
            }
        }
        out
    }
}

#[test]
fn host_src_has_no_import_circles() {
    let g = Graph::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("src"), "opzero_host");
    let circles: Vec<String> = g.circles().iter().map(|c| g.report(c)).collect();
    assert!(circles.is_empty(), "import circles in host/src:\n{}", circles.concat());
    // It read the tree: 59 modules and 190 edges when this was written.
    let (modules, edges) = (g.modules.len(), g.edges.len());
    assert!(modules >= 50 && edges >= 150, "only {modules} modules and {edges} edges found");
    for edge in [("bridge", "core"), ("core::chain", "core::in_use"), ("main", "serve")] {
        let found = g.edges.keys().any(|&(a, b)| (g.modules[a].name.as_str(), g.modules[b].name.as_str()) == edge);
        assert!(found, "no edge {} -> {}", edge.0, edge.1);
    }
}

#[test]
fn a_parent_and_child_that_use_each_other_are_a_circle() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("a")).unwrap();
    for (file, text) in [
        ("lib.rs", "pub mod a;\npub mod b;\n"),
        ("a.rs", "mod child;\npub struct X;\npub fn f(_: child::Y) {}\n"),
        ("a/child.rs", "pub struct Y;\npub fn g(_: super::X) {}\n"),
        ("b.rs", "pub fn h(_: crate::a::X) {}\n"),
    ] {
        std::fs::write(dir.path().join(file), text).unwrap();
    }
    let g = Graph::load(dir.path(), "x");
    let circles = g.circles();
    assert_eq!(circles, BTreeSet::from([vec!["a", "a::child"]]));
    let report = g.report(circles.first().unwrap());
    assert!(report.contains("a -> a::child   (a.rs: child::Y)"), "{report}");
    assert!(report.contains("a::child -> a   (a/child.rs: super::X)"), "{report}");
}
