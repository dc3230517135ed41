"""Reading the data: the 30Music and HetRec readers, the synthetic stand-in, the user x artist matrix."""
