//! A source file parsed with tree-sitter, and what the pipeline reads from it: definitions
//! (where a doc comment would go, whether one is there), comments, imports and declared names.
//!
//! Every provider's answer is checked and placed against this parse, so the rules of where a
//! comment goes and what a rename touches live here once, for every provider.

use std::ops::Range;

use hivesync_core::ports::Language;
use hivesync_core::{Error, Result};
use tree_sitter::{Node, Parser, Tree};

/// A parsed file.
pub struct Parsed<'a> {
    pub language: Language,
    pub source: &'a str,
    pub tree: Tree,
}

impl std::fmt::Debug for Parsed<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Parsed")
            .field("language", &self.language)
            .finish_non_exhaustive()
    }
}

fn grammar(language: Language) -> tree_sitter::Language {
    match language {
        Language::Rust => tree_sitter_rust::LANGUAGE.into(),
        Language::Python => tree_sitter_python::LANGUAGE.into(),
        Language::JavaScript => tree_sitter_javascript::LANGUAGE.into(),
        Language::TypeScript => tree_sitter_typescript::LANGUAGE_TYPESCRIPT.into(),
        Language::Tsx => tree_sitter_typescript::LANGUAGE_TSX.into(),
    }
}

/// Parses `source`. Syntax errors do not fail: tree-sitter recovers, and
/// [`Parsed::has_errors`] says so.
pub fn parse(language: Language, source: &str) -> Result<Parsed<'_>> {
    let mut parser = Parser::new();
    parser
        .set_language(&grammar(language))
        .map_err(|err| Error::internal("a grammar does not load").with_source(err))?;
    let tree = parser
        .parse(source, None)
        .ok_or_else(|| Error::internal("the parser gave up"))?;
    Ok(Parsed {
        language,
        source,
        tree,
    })
}

/// A definition that can carry a doc comment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Definition {
    /// `function`, `method`, `struct`, `enum`, `trait`, `impl`, `type`, `class`, `interface`,
    /// `const`, `static`, `module`.
    pub kind: &'static str,
    pub name: String,
    /// The definition's lines, 0-based, its attributes, decorators and `export` included.
    pub start_row: usize,
    pub end_row: usize,
    /// The row of the name (what suggestions refer to).
    pub name_row: usize,
    /// Directly in the file, not inside a class, impl, trait or module.
    pub top_level: bool,
    /// Whether it already has a doc comment or docstring.
    pub documented: bool,
    /// Where a doc comment goes: the start of a line, and the indentation it gets. `None` when
    /// the definition does not start its own line (nothing is placed then).
    pub doc_at: Option<(usize, String)>,
    /// Parameter names (without `self`), for doc stubs.
    pub params: Vec<String>,
    /// The declared return type, as written.
    pub returns: Option<String>,
}

impl Parsed<'_> {
    pub fn has_errors(&self) -> bool {
        self.tree.root_node().has_error()
    }

    pub fn text(&self, node: Node<'_>) -> &str {
        &self.source[node.byte_range()]
    }

    /// The whitespace that starts `row`, if the node starting at `byte` is the first thing on it.
    fn leading_indent(&self, byte: usize) -> Option<(usize, String)> {
        let line_start = self.source[..byte].rfind('\n').map_or(0, |at| at + 1);
        let before = &self.source[line_start..byte];
        before
            .chars()
            .all(|c| c == ' ' || c == '\t')
            .then(|| (line_start, before.to_owned()))
    }

    /// The byte ranges of every comment, and of every Python docstring.
    pub fn comments(&self) -> Vec<Range<usize>> {
        let mut out = Vec::new();
        walk(self.tree.root_node(), &mut |node| {
            if node.kind().contains("comment") && node.is_named() {
                out.push(node.byte_range());
                return false;
            }
            if self.language == Language::Python && node.kind() == "string" && is_docstring(node) {
                out.push(node.byte_range());
                return false;
            }
            true
        });
        out
    }

    /// The definitions that can carry documentation, in source order.
    pub fn definitions(&self) -> Vec<Definition> {
        let mut out = Vec::new();
        self.collect_definitions(self.tree.root_node(), true, false, &mut out);
        out.sort_by_key(|d| (d.start_row, d.name_row));
        out
    }

    fn collect_definitions(
        &self,
        container: Node<'_>,
        top_level: bool,
        in_class: bool,
        out: &mut Vec<Definition>,
    ) {
        let mut cursor = container.walk();
        let children: Vec<Node<'_>> = container.named_children(&mut cursor).collect();
        for node in children {
            match self.language {
                Language::Rust => self.rust_item(node, top_level, in_class, out),
                Language::Python => self.python_item(node, node, top_level, in_class, out),
                _ => self.js_item(node, node, top_level, out),
            }
        }
    }

    fn push(
        &self,
        out: &mut Vec<Definition>,
        kind: &'static str,
        node: Node<'_>,
        outer: Node<'_>,
        top_level: bool,
        documented: bool,
    ) {
        let Some(name) = node.child_by_field_name("name") else {
            return;
        };
        let anchor = self.doc_anchor(outer);
        let (params, returns) = self.signature(node);
        out.push(Definition {
            kind,
            name: self.text(name).to_owned(),
            start_row: anchor.start_position().row,
            end_row: outer.end_position().row,
            name_row: name.start_position().row,
            top_level,
            documented,
            // A definition that did not parse cleanly gets nothing placed in it.
            doc_at: if node.has_error() {
                None
            } else if self.language == Language::Python {
                self.docstring_at(node)
            } else {
                self.leading_indent(anchor.start_byte())
            },
            params,
            returns,
        });
    }

    /// The first node of a definition with its attributes: a doc comment goes above it.
    fn doc_anchor<'t>(&self, node: Node<'t>) -> Node<'t> {
        if self.language != Language::Rust {
            return node;
        }
        let mut anchor = node;
        while let Some(prev) = anchor.prev_named_sibling() {
            if prev.kind() == "attribute_item"
                && prev.end_position().row + 1 >= anchor.start_position().row
            {
                anchor = prev;
            } else {
                break;
            }
        }
        anchor
    }

    /// Whether a doc comment sits directly above `node` (its attributes skipped).
    fn has_doc_above(&self, node: Node<'_>) -> bool {
        let mut current = node;
        while let Some(prev) = current.prev_sibling() {
            let adjacent = prev.end_position().row + 1 >= current.start_position().row;
            if !adjacent {
                return false;
            }
            let text = self.text(prev);
            match prev.kind() {
                "attribute_item" => {
                    if text
                        .trim_start_matches("#[")
                        .trim_start()
                        .starts_with("doc")
                    {
                        return true;
                    }
                    current = prev;
                }
                "line_comment" => {
                    return text.starts_with("///") && !text.starts_with("////");
                }
                "block_comment" => return text.starts_with("/**") && !text.starts_with("/***"),
                "comment" => return text.starts_with("/**"),
                _ => return false,
            }
        }
        false
    }

    fn signature(&self, node: Node<'_>) -> (Vec<String>, Option<String>) {
        let mut params = Vec::new();
        if let Some(list) = node.child_by_field_name("parameters") {
            let mut cursor = list.walk();
            for param in list.named_children(&mut cursor) {
                let name = match param.kind() {
                    "self_parameter" | "comment" => continue,
                    "identifier" => Some(param),
                    _ => param
                        .child_by_field_name("pattern")
                        .or_else(|| param.child_by_field_name("name"))
                        .or_else(|| first_identifier(param)),
                };
                if let Some(name) = name {
                    let text = self.text(name);
                    if text != "self" && text != "cls" && is_plain_identifier(text) {
                        params.push(text.to_owned());
                    }
                }
            }
        }
        let returns = node
            .child_by_field_name("return_type")
            .map(|t| self.text(t).trim_start_matches(':').trim().to_owned());
        (params, returns)
    }

    fn rust_item(&self, node: Node<'_>, top_level: bool, in_impl: bool, out: &mut Vec<Definition>) {
        let kind = match node.kind() {
            "function_item" | "function_signature_item" if in_impl => "method",
            "function_item" | "function_signature_item" => "function",
            "struct_item" => "struct",
            "enum_item" => "enum",
            "union_item" => "union",
            "trait_item" => "trait",
            "type_item" => "type",
            "const_item" => "const",
            "static_item" => "static",
            "mod_item" => "module",
            "macro_definition" => "macro",
            "impl_item" => {
                if let Some(body) = node.child_by_field_name("body") {
                    self.collect_definitions(body, false, true, out);
                }
                return;
            }
            _ => return,
        };
        let documented = self.has_doc_above(node);
        self.push(out, kind, node, node, top_level, documented);
        if matches!(kind, "trait" | "module")
            && let Some(body) = node.child_by_field_name("body")
        {
            self.collect_definitions(body, false, kind == "trait", out);
        }
    }

    fn python_item(
        &self,
        node: Node<'_>,
        outer: Node<'_>,
        top_level: bool,
        in_class: bool,
        out: &mut Vec<Definition>,
    ) {
        match node.kind() {
            "decorated_definition" => {
                if let Some(definition) = node.child_by_field_name("definition") {
                    self.python_item(definition, node, top_level, in_class, out);
                }
            }
            "function_definition" => {
                let kind = if in_class { "method" } else { "function" };
                let documented = python_docstring(node).is_some();
                self.push(out, kind, node, outer, top_level, documented);
            }
            "class_definition" => {
                let documented = python_docstring(node).is_some();
                self.push(out, "class", node, outer, top_level, documented);
                if let Some(body) = node.child_by_field_name("body") {
                    self.collect_definitions(body, false, true, out);
                }
            }
            _ => {}
        }
    }

    /// Where a Python docstring goes: the start of the first line after the header (before a
    /// comment that opens the body), indented as the body is.
    fn docstring_at(&self, node: Node<'_>) -> Option<(usize, String)> {
        let body = node.child_by_field_name("body")?;
        let mut cursor = node.walk();
        let children: Vec<Node<'_>> = node.children(&mut cursor).collect();
        let colon = children
            .iter()
            .rposition(|c| c.kind() == ":" && c.end_byte() <= body.start_byte())?;
        let header_row = children[colon].end_position().row;
        let first = *children.get(colon + 1)?;
        // A body on the header's own line (`def f(): pass`) has no place for one.
        if first.start_position().row <= header_row || body.start_position().row <= header_row {
            return None;
        }
        let (at, _) = self.leading_indent(first.start_byte())?;
        let (_, indent) = self.leading_indent(body.start_byte())?;
        Some((at, indent))
    }

    fn js_item(&self, node: Node<'_>, outer: Node<'_>, top_level: bool, out: &mut Vec<Definition>) {
        let kind = match node.kind() {
            "export_statement" => {
                if let Some(declaration) = node.child_by_field_name("declaration") {
                    self.js_item(declaration, node, top_level, out);
                }
                return;
            }
            "function_declaration" | "generator_function_declaration" | "function_signature" => {
                "function"
            }
            "method_definition" | "method_signature" | "abstract_method_signature" => {
                let name = node
                    .child_by_field_name("name")
                    .map(|n| self.text(n))
                    .unwrap_or_default();
                if name == "constructor" {
                    return;
                }
                "method"
            }
            "class_declaration" | "abstract_class_declaration" => {
                let documented = self.has_doc_above(outer);
                self.push(out, "class", node, outer, top_level, documented);
                if let Some(body) = node.child_by_field_name("body") {
                    self.collect_definitions(body, false, true, out);
                }
                return;
            }
            "interface_declaration" => "interface",
            "type_alias_declaration" => "type",
            "enum_declaration" => "enum",
            "lexical_declaration" | "variable_declaration" if top_level => {
                // `const handler = (req) => ...`: a function by any other name.
                let mut cursor = node.walk();
                let declarators: Vec<Node<'_>> = node
                    .named_children(&mut cursor)
                    .filter(|d| d.kind() == "variable_declarator")
                    .collect();
                if let [declarator] = declarators.as_slice()
                    && let Some(value) = declarator.child_by_field_name("value")
                    && matches!(
                        value.kind(),
                        "arrow_function" | "function_expression" | "function"
                    )
                    && declarator
                        .child_by_field_name("name")
                        .is_some_and(|n| n.kind() == "identifier")
                {
                    let documented = self.has_doc_above(outer);
                    let (params, returns) = self.signature(value);
                    let name = declarator.child_by_field_name("name").expect("checked");
                    out.push(Definition {
                        kind: "function",
                        name: self.text(name).to_owned(),
                        start_row: outer.start_position().row,
                        end_row: outer.end_position().row,
                        name_row: name.start_position().row,
                        top_level,
                        documented,
                        doc_at: self.leading_indent(outer.start_byte()),
                        params,
                        returns,
                    });
                }
                return;
            }
            _ => return,
        };
        let documented = self.has_doc_above(outer);
        self.push(out, kind, node, outer, top_level, documented);
        if kind == "interface"
            && let Some(body) = node.child_by_field_name("body")
        {
            self.collect_definitions(body, false, true, out);
        }
    }

    /// What the file imports, as written (module paths or specifiers), in order.
    pub fn imports(&self) -> Vec<String> {
        let root = self.tree.root_node();
        let mut out = Vec::new();
        let mut cursor = root.walk();
        for node in root.named_children(&mut cursor) {
            match (self.language, node.kind()) {
                (Language::Rust, "use_declaration") => {
                    if let Some(argument) = node.child_by_field_name("argument") {
                        out.push(squash(self.text(argument)));
                    }
                }
                (Language::Rust, "extern_crate_declaration") => {
                    if let Some(name) = node.child_by_field_name("name") {
                        out.push(self.text(name).to_owned());
                    }
                }
                (Language::Python, "import_statement") => {
                    let mut inner = node.walk();
                    for name in node.children_by_field_name("name", &mut inner) {
                        let module = name.child_by_field_name("name").unwrap_or(name);
                        out.push(self.text(module).to_owned());
                    }
                }
                (Language::Python, "import_from_statement") => {
                    if let Some(module) = node.child_by_field_name("module_name") {
                        out.push(self.text(module).to_owned());
                    }
                }
                (Language::Python | Language::Rust, _) => {}
                (_, "import_statement") => {
                    if let Some(source) = node.child_by_field_name("source") {
                        out.push(unquote(self.text(source)));
                    }
                }
                _ => {}
            }
        }
        out
    }

    /// The file's own documentation: `//!` lines, a module docstring, or a leading `/** */`.
    pub fn module_doc(&self) -> Option<String> {
        let root = self.tree.root_node();
        let mut cursor = root.walk();
        let mut lines = Vec::new();
        for node in root.named_children(&mut cursor) {
            let text = self.text(node);
            match (self.language, node.kind()) {
                (Language::Rust, "line_comment") if text.starts_with("//!") => {
                    lines.push(text.trim_start_matches("//!").trim().to_owned());
                }
                (Language::Rust, "block_comment") if text.starts_with("/*!") => {
                    lines.push(strip_block(text));
                }
                (Language::Rust, "line_comment" | "inner_attribute_item" | "block_comment") => {
                    if !lines.is_empty() {
                        break;
                    }
                }
                (Language::Python, "expression_statement") => {
                    let string = node.named_child(0).filter(|s| s.kind() == "string");
                    if let Some(string) = string {
                        lines.push(python_string_text(self.text(string)));
                    }
                    break;
                }
                (Language::Python, "comment") => {}
                (Language::JavaScript | Language::TypeScript | Language::Tsx, "comment") => {
                    if text.starts_with("/**") {
                        lines.push(strip_block(text));
                        break;
                    }
                }
                _ => break,
            }
        }
        let doc = lines.join(" ");
        first_sentence(&doc)
    }
}

/// Visits `node` and its descendants in order; `visit` returns whether to descend.
pub fn walk<'t>(node: Node<'t>, visit: &mut impl FnMut(Node<'t>) -> bool) {
    let mut cursor = node.walk();
    let mut descend = visit(cursor.node());
    loop {
        if descend && cursor.goto_first_child() {
            descend = visit(cursor.node());
            continue;
        }
        loop {
            if cursor.node() == node {
                return;
            }
            if cursor.goto_next_sibling() {
                descend = visit(cursor.node());
                break;
            }
            if !cursor.goto_parent() {
                return;
            }
        }
    }
}

fn first_identifier(node: Node<'_>) -> Option<Node<'_>> {
    let mut found = None;
    walk(node, &mut |n| {
        if found.is_some() {
            return false;
        }
        if n.kind() == "identifier" {
            found = Some(n);
            return false;
        }
        true
    });
    found
}

fn is_plain_identifier(text: &str) -> bool {
    !text.is_empty()
        && text
            .chars()
            .all(|c| c.is_alphanumeric() || c == '_' || c == '$')
}

/// The docstring of a Python function or class: its body's first statement, if a string.
fn python_docstring(node: Node<'_>) -> Option<Node<'_>> {
    let body = node.child_by_field_name("body")?;
    let mut cursor = body.walk();
    let first = body
        .named_children(&mut cursor)
        .find(|n| n.kind() != "comment")?;
    (first.kind() == "expression_statement")
        .then(|| first.named_child(0))
        .flatten()
        .filter(|s| s.kind() == "string")
}

fn is_docstring(string: Node<'_>) -> bool {
    let Some(statement) = string.parent() else {
        return false;
    };
    if statement.kind() != "expression_statement" || statement.named_child_count() != 1 {
        return false;
    }
    match statement.parent() {
        Some(parent) if parent.kind() == "module" => true,
        Some(block) if block.kind() == "block" => block
            .parent()
            .and_then(python_docstring)
            .is_some_and(|doc| doc == string),
        _ => false,
    }
}

fn squash(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join("")
}

fn unquote(text: &str) -> String {
    text.trim_matches(|c| c == '"' || c == '\'' || c == '`')
        .to_owned()
}

fn strip_block(text: &str) -> String {
    let inner = text
        .trim_start_matches("/**")
        .trim_start_matches("/*!")
        .trim_end_matches("*/");
    inner
        .lines()
        .map(|line| line.trim().trim_start_matches('*').trim())
        .filter(|line| !line.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

fn python_string_text(text: &str) -> String {
    let body = text.trim_start_matches(|c: char| c.is_ascii_alphabetic());
    let body = ["\"\"\"", "'''", "\"", "'"]
        .iter()
        .find_map(|q| body.strip_prefix(q).and_then(|rest| rest.strip_suffix(q)))
        .unwrap_or(body);
    body.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Up to and including the first `.`, `!` or `?` followed by a space or the end.
pub fn first_sentence(text: &str) -> Option<String> {
    let text = text.trim();
    if text.is_empty() {
        return None;
    }
    let bytes = text.as_bytes();
    for (at, c) in text.char_indices() {
        if matches!(c, '.' | '!' | '?') && bytes.get(at + 1).is_none_or(|b| *b == b' ') {
            return Some(text[..=at].to_owned());
        }
    }
    Some(text.to_owned())
}
