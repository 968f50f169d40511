//! Declared names, the conventions they should follow, and where each occurs.
//!
//! tree-sitter knows syntax, not scopes, so a rename is file-wide: every identifier of the
//! declaration's class (a variable's name is an `identifier`; a type's also a `type_identifier`;
//! a method's also the field or property after a `.`) with the same text. Where that would change
//! meaning beyond the name (a shorthand property `{ data }`, a Rust format string `"{data}"`) the
//! name is not renamed at all.

use std::collections::BTreeSet;
use std::ops::Range;

use heck::{ToLowerCamelCase, ToShoutySnakeCase, ToSnakeCase, ToUpperCamelCase};
use hivesync_core::ports::{Language, RenameReason};
use tree_sitter::Node;

use crate::parse::{Parsed, walk};

/// What a name names, which decides its convention and which identifiers are its occurrences.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Function,
    Method,
    Type,
    Constant,
    Variable,
    Parameter,
}

/// A name as it is declared.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Declaration {
    pub name: String,
    pub row: usize,
    pub role: Role,
    /// A module-level binding (Python) or top-level `const` (JavaScript): an upper-case
    /// constant name is also right.
    pub may_be_constant: bool,
    /// Its value is a function (a React component may be `UpperCamel`).
    pub holds_function: bool,
    /// Declared `bool`/`boolean` or initialised with a boolean literal.
    pub boolean: bool,
    /// A better name read from its initialiser (`let tmp = parse_config()` → `config`).
    pub hint: Option<String>,
}

/// A rename the rules call for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub declaration: Declaration,
    pub to: String,
    pub reason: RenameReason,
    pub explanation: String,
}

const VAGUE: &[&str] = &[
    "tmp", "temp", "data", "foo", "bar", "baz", "qux", "stuff", "thing", "things", "obj", "val",
    "var", "dummy", "blah", "misc",
];
/// Words that are fine alone but vague with a number after them (`result2`).
const NUMBERED: &[&str] = &[
    "result", "value", "item", "list", "arr", "array", "str", "string", "num", "info", "res", "x",
    "y", "obj", "node", "elem",
];
/// What a value is made by that says nothing about it (`read_to_string` → `string`).
const GENERIC: &[&str] = &[
    "string", "str", "vec", "value", "result", "object", "list", "map", "text", "bytes", "int",
    "number", "array", "len", "length", "clone", "unwrap", "collect", "owned", "default",
];
const BOOLEAN_PREFIXES: &[&str] = &[
    "is", "has", "should", "can", "was", "were", "will", "did", "does", "must", "needs", "allow",
];
const VERB_PREFIXES: &[&str] = &[
    "get", "load", "read", "fetch", "parse", "build", "make", "create", "compute", "find", "open",
    "new", "to", "as", "into",
];

impl Parsed<'_> {
    /// Every declared name, in source order.
    pub fn declarations(&self) -> Vec<Declaration> {
        let mut out = Vec::new();
        walk(self.tree.root_node(), &mut |node| {
            self.declaration(node, &mut out)
        });
        out
    }

    /// Adds what `node` declares; returns whether to look inside it.
    fn declaration(&self, node: Node<'_>, out: &mut Vec<Declaration>) -> bool {
        let language = self.language;
        let name_of = |field: &str| node.child_by_field_name(field);
        let mut add = |name: Node<'_>, role: Role, extra: Extras| {
            let text = self.text(name);
            if text.is_empty() || !text.chars().all(|c| c.is_alphanumeric() || c == '_') {
                return;
            }
            out.push(Declaration {
                name: text.to_owned(),
                row: name.start_position().row,
                role,
                may_be_constant: extra.may_be_constant,
                holds_function: extra.holds_function,
                boolean: extra.boolean,
                hint: extra.hint,
            });
        };
        match (language, node.kind()) {
            // Loop variables, closure and lambda parameters, patterns and catch bindings are
            // checked for nothing; what their bodies declare is.
            (
                _,
                "closure_expression"
                | "lambda"
                | "arrow_function"
                | "for_expression"
                | "for_statement"
                | "for_in_statement"
                | "match_arm"
                | "catch_clause"
                | "list_comprehension"
                | "generator_expression"
                | "dictionary_comprehension"
                | "set_comprehension",
            ) => {
                let body = name_of("body").or_else(|| name_of("value"));
                if let Some(body) = body {
                    walk(body, &mut |inner| self.declaration(inner, out));
                }
                return false;
            }
            (Language::Rust, "function_item" | "function_signature_item") => {
                if let Some(name) = name_of("name") {
                    let in_impl = node
                        .parent()
                        .is_some_and(|p| p.kind() == "declaration_list");
                    add(
                        name,
                        if in_impl {
                            Role::Method
                        } else {
                            Role::Function
                        },
                        Extras::default(),
                    );
                }
            }
            (
                Language::Rust,
                "struct_item" | "enum_item" | "trait_item" | "type_item" | "union_item",
            ) => {
                if let Some(name) = name_of("name") {
                    add(name, Role::Type, Extras::default());
                }
            }
            (Language::Rust, "const_item" | "static_item") => {
                if let Some(name) = name_of("name") {
                    add(name, Role::Constant, Extras::default());
                }
            }
            (Language::Rust, "let_declaration") => {
                if let Some(pattern) = name_of("pattern").filter(|p| p.kind() == "identifier") {
                    let extras = self.extras(name_of("type"), name_of("value"));
                    add(pattern, Role::Variable, extras);
                }
            }
            (Language::Rust, "parameter") => {
                if let Some(pattern) = name_of("pattern").filter(|p| p.kind() == "identifier") {
                    add(pattern, Role::Parameter, self.extras(name_of("type"), None));
                }
            }
            (Language::Python, "function_definition") => {
                if let Some(name) = name_of("name") {
                    let in_class = node
                        .parent()
                        .and_then(|b| b.parent())
                        .is_some_and(|c| c.kind() == "class_definition")
                        || node
                            .parent()
                            .filter(|d| d.kind() == "decorated_definition")
                            .and_then(|d| d.parent())
                            .and_then(|b| b.parent())
                            .is_some_and(|c| c.kind() == "class_definition");
                    add(
                        name,
                        if in_class {
                            Role::Method
                        } else {
                            Role::Function
                        },
                        Extras::default(),
                    );
                }
                if let Some(parameters) = name_of("parameters") {
                    self.python_parameters(parameters, out);
                }
                if let Some(body) = name_of("body") {
                    walk(body, &mut |inner| self.declaration(inner, out));
                }
                return false;
            }
            (Language::Python, "class_definition") => {
                if let Some(name) = name_of("name") {
                    add(name, Role::Type, Extras::default());
                }
            }
            (Language::Python, "assignment") => {
                if let Some(left) = name_of("left").filter(|l| l.kind() == "identifier") {
                    let module_level = node
                        .parent()
                        .and_then(|s| s.parent())
                        .is_some_and(|m| m.kind() == "module");
                    let mut extras = self.extras(name_of("type"), name_of("right"));
                    extras.may_be_constant = module_level;
                    add(left, Role::Variable, extras);
                }
            }
            (
                Language::JavaScript | Language::TypeScript | Language::Tsx,
                "function_declaration" | "generator_function_declaration" | "function_signature",
            ) => {
                if let Some(name) = name_of("name") {
                    add(name, Role::Function, Extras::default());
                }
            }
            (
                Language::JavaScript | Language::TypeScript | Language::Tsx,
                "method_definition" | "method_signature" | "abstract_method_signature",
            ) => {
                if let Some(name) = name_of("name").filter(|n| n.kind() == "property_identifier")
                    && self.text(name) != "constructor"
                {
                    add(name, Role::Method, Extras::default());
                }
            }
            (
                Language::JavaScript | Language::TypeScript | Language::Tsx,
                "class_declaration"
                | "abstract_class_declaration"
                | "interface_declaration"
                | "type_alias_declaration"
                | "enum_declaration",
            ) => {
                if let Some(name) = name_of("name") {
                    add(name, Role::Type, Extras::default());
                }
            }
            (
                Language::JavaScript | Language::TypeScript | Language::Tsx,
                "variable_declarator",
            ) => {
                if let Some(name) = name_of("name").filter(|n| n.kind() == "identifier") {
                    let declaration = node.parent();
                    let top_level_const = declaration.is_some_and(|d| {
                        d.kind() == "lexical_declaration"
                            && self.text(d).starts_with("const")
                            && d.parent().is_some_and(|p| {
                                p.kind() == "program" || p.kind() == "export_statement"
                            })
                    });
                    let type_node = name_of("type");
                    let mut extras = self.extras(type_node, name_of("value"));
                    extras.may_be_constant = top_level_const;
                    add(name, Role::Variable, extras);
                }
            }
            (Language::JavaScript | Language::TypeScript | Language::Tsx, "formal_parameters") => {
                let mut cursor = node.walk();
                for param in node.named_children(&mut cursor) {
                    let (name, type_node) = match param.kind() {
                        "identifier" => (Some(param), None),
                        "required_parameter" | "optional_parameter" => (
                            param
                                .child_by_field_name("pattern")
                                .filter(|p| p.kind() == "identifier"),
                            param.child_by_field_name("type"),
                        ),
                        "assignment_pattern" => (
                            param
                                .child_by_field_name("left")
                                .filter(|p| p.kind() == "identifier"),
                            None,
                        ),
                        _ => (None, None),
                    };
                    if let Some(name) = name {
                        add(name, Role::Parameter, self.extras(type_node, None));
                    }
                }
                return false;
            }
            _ => {}
        }
        true
    }

    fn python_parameters(&self, parameters: Node<'_>, out: &mut Vec<Declaration>) {
        let mut cursor = parameters.walk();
        for param in parameters.named_children(&mut cursor) {
            let (name, type_node, value) = match param.kind() {
                "identifier" => (Some(param), None, None),
                "typed_parameter" => (
                    param.named_child(0).filter(|n| n.kind() == "identifier"),
                    param.child_by_field_name("type"),
                    None,
                ),
                "default_parameter" | "typed_default_parameter" => (
                    param
                        .child_by_field_name("name")
                        .filter(|n| n.kind() == "identifier"),
                    param.child_by_field_name("type"),
                    param.child_by_field_name("value"),
                ),
                _ => (None, None, None),
            };
            let Some(name) = name else { continue };
            let text = self.text(name);
            if text == "self" || text == "cls" {
                continue;
            }
            let extras = self.extras(type_node, value);
            out.push(Declaration {
                name: text.to_owned(),
                row: name.start_position().row,
                role: Role::Parameter,
                may_be_constant: false,
                holds_function: false,
                boolean: extras.boolean,
                hint: None,
            });
        }
    }

    fn extras(&self, type_node: Option<Node<'_>>, value: Option<Node<'_>>) -> Extras {
        let type_text = type_node.map(|t| self.text(t).trim_start_matches(':').trim().to_owned());
        let boolean_type = type_text
            .as_deref()
            .is_some_and(|t| matches!(t, "bool" | "boolean" | "&bool"));
        let boolean_value =
            value.is_some_and(|v| matches!(v.kind(), "boolean_literal" | "true" | "false"));
        let holds_function = value.is_some_and(|v| {
            matches!(
                v.kind(),
                "arrow_function" | "function_expression" | "function" | "lambda"
            )
        });
        Extras {
            may_be_constant: false,
            holds_function,
            boolean: boolean_type || boolean_value,
            hint: value.and_then(|v| self.hint_from_value(v)),
        }
    }

    /// A name from what a value is made by: `parse_config()` → `config`, `Config::new()`,
    /// `new Config()` or `Config()` → `config`.
    fn hint_from_value(&self, value: Node<'_>) -> Option<String> {
        let value = if value.kind() == "await_expression" || value.kind() == "try_expression" {
            value.named_child(0)?
        } else {
            value
        };
        let callee = match value.kind() {
            "call_expression" | "call" => value.child_by_field_name("function")?,
            "new_expression" => value.child_by_field_name("constructor")?,
            _ => return None,
        };
        let segments: Vec<&str> = self
            .text(callee)
            .split(['.', ':'])
            .filter(|s| !s.is_empty())
            .collect();
        let last = *segments.last()?;
        let base = if matches!(last, "new" | "default" | "from" | "open") && segments.len() >= 2 {
            segments[segments.len() - 2]
        } else {
            last
        };
        let words = base.to_snake_case();
        let mut parts: Vec<&str> = words.split('_').filter(|w| !w.is_empty()).collect();
        while parts.len() > 1 && VERB_PREFIXES.contains(&parts[0]) {
            parts.remove(0);
        }
        while parts.len() > 1 && matches!(parts[parts.len() - 1], "sync" | "async") {
            parts.pop();
        }
        let hint = parts.join("_");
        if hint.is_empty()
            || !hint.chars().next()?.is_alphabetic()
            || is_vague(&hint)
            || GENERIC.contains(&hint.as_str())
        {
            return None;
        }
        Some(hint)
    }

    /// Every name in the file that an identifier of any kind spells (what a new name must not
    /// collide with).
    pub fn identifier_names(&self) -> BTreeSet<String> {
        let mut names = BTreeSet::new();
        walk(self.tree.root_node(), &mut |node| {
            if node.kind().ends_with("identifier") {
                names.insert(self.text(node).to_owned());
            }
            true
        });
        names
    }

    /// The byte ranges of every occurrence of `name` as `role`; `None` when renaming it would
    /// change more than the name.
    pub fn occurrences(&self, name: &str, role: Role) -> Option<Vec<Range<usize>>> {
        let mut ranges = Vec::new();
        let mut unsafe_use = false;
        let format_use = [format!("{{{name}}}"), format!("{{{name}:")];
        walk(self.tree.root_node(), &mut |node| {
            let kind = node.kind();
            if matches!(kind, "string_literal" | "raw_string_literal")
                && self.language == Language::Rust
            {
                let text = self.text(node);
                if format_use
                    .iter()
                    .any(|pattern| text.contains(pattern.as_str()))
                {
                    unsafe_use = true;
                }
                return false;
            }
            if !kind.ends_with("identifier") || self.text(node) != name {
                return true;
            }
            if kind.starts_with("shorthand_") {
                unsafe_use = true;
                return false;
            }
            let matches_role = match kind {
                "identifier" => {
                    role == Role::Method
                        || !(self.language == Language::Python
                            && node.parent().is_some_and(|p| {
                                p.kind() == "attribute"
                                    && p.child_by_field_name("attribute") == Some(node)
                            }))
                }
                "type_identifier" => role == Role::Type,
                "field_identifier" | "property_identifier" => role == Role::Method,
                _ => false,
            };
            if matches_role {
                ranges.push(node.byte_range());
            }
            true
        });
        (!unsafe_use).then_some(ranges)
    }

    /// Whether `name` is a keyword or a built-in that must not become a name.
    pub fn reserved(&self, name: &str) -> bool {
        let words: &[&str] = match self.language {
            Language::Rust => &[
                "as", "async", "await", "break", "const", "continue", "crate", "dyn", "else",
                "enum", "extern", "false", "fn", "for", "if", "impl", "in", "let", "loop", "match",
                "mod", "move", "mut", "pub", "ref", "return", "self", "Self", "static", "struct",
                "super", "trait", "true", "type", "unsafe", "use", "where", "while", "gen", "try",
            ],
            Language::Python => &[
                "False", "None", "True", "and", "as", "assert", "async", "await", "break", "class",
                "continue", "def", "del", "elif", "else", "except", "finally", "for", "from",
                "global", "if", "import", "in", "is", "lambda", "nonlocal", "not", "or", "pass",
                "raise", "return", "try", "while", "with", "yield", "match", "case", "type",
                "list", "dict", "str", "int", "len", "id", "input", "print", "object",
            ],
            _ => &[
                "break",
                "case",
                "catch",
                "class",
                "const",
                "continue",
                "debugger",
                "default",
                "delete",
                "do",
                "else",
                "enum",
                "export",
                "extends",
                "false",
                "finally",
                "for",
                "function",
                "if",
                "import",
                "in",
                "instanceof",
                "new",
                "null",
                "return",
                "super",
                "switch",
                "this",
                "throw",
                "true",
                "try",
                "typeof",
                "var",
                "void",
                "while",
                "with",
                "yield",
                "let",
                "static",
                "await",
                "async",
                "interface",
                "type",
                "implements",
                "package",
                "private",
                "protected",
                "public",
                "undefined",
                "arguments",
                "eval",
            ],
        };
        words.contains(&name)
    }

    /// What the naming rules say about each declared name: at most one finding per name (the
    /// first declaration decides), in source order.
    pub fn findings(&self) -> Vec<Finding> {
        let mut seen = BTreeSet::new();
        let mut out = Vec::new();
        for declaration in self.declarations() {
            if !seen.insert(declaration.name.clone()) {
                continue;
            }
            if let Some(finding) = self.finding(&declaration) {
                out.push(finding);
            }
        }
        out
    }

    fn finding(&self, declaration: &Declaration) -> Option<Finding> {
        let name = declaration.name.as_str();
        let core = name.trim_start_matches('_');
        let underscores = &name[..name.len() - core.len()];
        if core.is_empty()
            || core.trim_end_matches('_').is_empty()
            || (self.language == Language::Python && name.starts_with("__") && name.ends_with("__"))
        {
            return None;
        }
        let make = |to: String, reason: RenameReason, explanation: String| {
            (to != name && !to.is_empty()).then(|| Finding {
                declaration: declaration.clone(),
                to,
                reason,
                explanation,
            })
        };

        let expected = self.convention(declaration);
        if !expected.iter().any(|case| case.fits(core)) {
            let case = expected[0];
            return make(
                format!("{underscores}{}", case.apply(core)),
                RenameReason::Convention,
                format!(
                    "{} names in {} are {}",
                    role_word(declaration.role),
                    self.language.display_name(),
                    case.label()
                ),
            );
        }

        let is_value = matches!(declaration.role, Role::Variable | Role::Parameter);
        if is_value && declaration.boolean && !has_boolean_prefix(core) {
            let to = match self.language {
                Language::Rust | Language::Python => format!("is_{}", core.to_snake_case()),
                _ => format!("is{}", core.to_upper_camel_case()),
            };
            return make(
                format!("{underscores}{to}"),
                RenameReason::Boolean,
                "a boolean reads as a question: is, has or should".to_owned(),
            );
        }

        let single_letter = core.chars().count() == 1;
        if is_value && (single_letter || is_vague(core)) {
            let hint = declaration.hint.as_ref()?;
            let to = self.convention(declaration)[0].apply(hint);
            let what = if single_letter {
                "a single letter outside a loop or closure"
            } else {
                "a name that says nothing about what it holds"
            };
            return make(
                format!("{underscores}{to}"),
                RenameReason::Vague,
                format!("{what}; named after what makes its value"),
            );
        }
        None
    }

    /// The cases a declaration may be written in, the preferred first.
    fn convention(&self, declaration: &Declaration) -> Vec<Case> {
        use Case::*;
        match (self.language, declaration.role) {
            (_, Role::Type) => vec![UpperCamel],
            (Language::Rust, Role::Constant) => vec![Shouty],
            (Language::Rust | Language::Python, Role::Variable) if declaration.may_be_constant => {
                vec![Snake, Shouty]
            }
            (Language::Rust | Language::Python, _) => vec![Snake],
            (_, Role::Variable) if declaration.holds_function => vec![LowerCamel, UpperCamel],
            (_, Role::Variable) if declaration.may_be_constant => vec![LowerCamel, Shouty],
            // React components are functions with UpperCamel names.
            (Language::Tsx | Language::JavaScript, Role::Function) => vec![LowerCamel, UpperCamel],
            _ => vec![LowerCamel],
        }
    }
}

#[derive(Debug, Default)]
struct Extras {
    may_be_constant: bool,
    holds_function: bool,
    boolean: bool,
    hint: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Case {
    Snake,
    Shouty,
    UpperCamel,
    LowerCamel,
}

impl Case {
    fn apply(self, name: &str) -> String {
        match self {
            Case::Snake => name.to_snake_case(),
            Case::Shouty => name.to_shouty_snake_case(),
            Case::UpperCamel => name.to_upper_camel_case(),
            Case::LowerCamel => name.to_lower_camel_case(),
        }
    }

    fn fits(self, name: &str) -> bool {
        self.apply(name) == name
    }

    fn label(self) -> &'static str {
        match self {
            Case::Snake => "snake_case",
            Case::Shouty => "SCREAMING_SNAKE_CASE",
            Case::UpperCamel => "UpperCamelCase",
            Case::LowerCamel => "lowerCamelCase",
        }
    }
}

fn role_word(role: Role) -> &'static str {
    match role {
        Role::Function => "function",
        Role::Method => "method",
        Role::Type => "type",
        Role::Constant => "constant",
        Role::Variable => "variable",
        Role::Parameter => "parameter",
    }
}

fn has_boolean_prefix(name: &str) -> bool {
    let snake = name.to_snake_case();
    let first = snake.split('_').next().unwrap_or_default();
    BOOLEAN_PREFIXES.contains(&first)
}

fn is_vague(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    let base = lower.trim_end_matches(|c: char| c.is_ascii_digit());
    let numbered = base.len() < lower.len();
    VAGUE.contains(&base) || (numbered && NUMBERED.contains(&base))
}
