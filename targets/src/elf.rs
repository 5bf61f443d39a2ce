//! Measures a linked board program: flash and RAM by section, the sizes of its symbols, and
//! the addresses of the instruction-count markers.

use object::{Object, ObjectSection, ObjectSymbol, SymbolKind};

use crate::error::TargetError;

/// Memory use of a linked program, in bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SectionSizes {
    /// Vector table and code (`.vectors`, `.text`, `.ARM.exidx`).
    pub text: u64,
    /// Constants, including the weights (`.rodata`).
    pub rodata: u64,
    /// Initialized data (`.data`, `.tdata`): RAM, with its load image in flash.
    pub data: u64,
    /// Zero-initialized data (`.tbss`, `.bss`): the arena and the harness's output buffers.
    pub bss: u64,
    /// The harness's embedded input vectors (in flash, not counted as the model's).
    pub testdata: u64,
}

impl SectionSizes {
    /// Flash the model and runtime occupy: code, constants and the load image of data.
    pub fn flash_bytes(&self) -> u64 {
        self.text + self.rodata + self.data
    }

    /// Static RAM: data and bss (the stack comes on top).
    pub fn static_ram_bytes(&self) -> u64 {
        self.data + self.bss
    }
}

/// Section sizes and marker addresses of a linked ELF.
#[derive(Clone, Debug, Default)]
pub struct ElfFacts {
    pub sizes: SectionSizes,
    pub count_begin: Option<u64>,
    pub count_end: Option<u64>,
    /// `kiln_layer_mark`, present in profiling builds only.
    pub layer_mark: Option<u64>,
    /// Functions and data objects with a size, in symbol-table order.
    pub symbols: Vec<SymbolSize>,
}

/// One sized symbol of a linked program (a function or a data object).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SymbolSize {
    pub name: String,
    /// Thumb functions' mode bit cleared.
    pub address: u64,
    pub size: u64,
    /// A function (text) rather than data.
    pub code: bool,
}

/// Section sizes of a relocatable object (one model's own code and data, as in user mode, where
/// the linked executable also holds the C library).
pub fn object_sizes(bytes: &[u8]) -> Result<SectionSizes, TargetError> {
    let file = object::File::parse(bytes).map_err(|e| TargetError::Elf(e.to_string()))?;
    let mut sizes = SectionSizes::default();
    for section in file.sections() {
        let name = section.name().unwrap_or("");
        let size = section.size();
        let is = |prefix: &str| name == prefix || name.starts_with(&format!("{prefix}."));
        if is(".text") {
            sizes.text += size;
        } else if is(".rodata") || is(".srodata") {
            sizes.rodata += size;
        } else if is(".data") || is(".sdata") {
            sizes.data += size;
        } else if is(".bss") || is(".sbss") {
            sizes.bss += size;
        }
    }
    Ok(sizes)
}

/// Reads `bytes` (a linked ELF file).
pub fn read_elf(bytes: &[u8], thumb: bool) -> Result<ElfFacts, TargetError> {
    let file = object::File::parse(bytes).map_err(|e| TargetError::Elf(e.to_string()))?;
    let mut facts = ElfFacts::default();
    for section in file.sections() {
        let name = section.name().unwrap_or("");
        let size = section.size();
        let sizes = &mut facts.sizes;
        match name {
            ".vectors" | ".text" | ".ARM.exidx" => sizes.text += size,
            ".rodata" | ".got" => sizes.rodata += size,
            ".data" | ".tdata" => sizes.data += size,
            ".tbss" | ".bss" => sizes.bss += size,
            ".kiln_testdata" => sizes.testdata += size,
            _ => {}
        }
    }
    for symbol in file.symbols() {
        // Thumb function symbols carry the mode in bit 0; QEMU reports even addresses.
        let address = if thumb {
            symbol.address() & !1
        } else {
            symbol.address()
        };
        match symbol.name() {
            Ok("kiln_count_begin") => facts.count_begin = Some(address),
            Ok("kiln_count_end") => facts.count_end = Some(address),
            Ok("kiln_layer_mark") => facts.layer_mark = Some(address),
            _ => {}
        }
        let kind = symbol.kind();
        if symbol.size() > 0 && matches!(kind, SymbolKind::Text | SymbolKind::Data) {
            if let Ok(name) = symbol.name() {
                facts.symbols.push(SymbolSize {
                    name: name.to_string(),
                    address,
                    size: symbol.size(),
                    code: kind == SymbolKind::Text,
                });
            }
        }
    }
    Ok(facts)
}
