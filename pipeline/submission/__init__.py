"""Submission files: binary RLE CSVs and the long K-class layout, written, validated and scored."""
