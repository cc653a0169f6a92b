"""Networks and what they are built from: smp/timm model factories, heads (hypercolumn), losses,
offline pretrained weights."""
