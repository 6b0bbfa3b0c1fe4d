// Types and sizes shared by the data-path modules (the register map has its own, generated
// package: ejlb_regmap_pkg). The verdict is what the classifier decides for one frame and the
// egress carries out; it travels through the verdict FIFO as one packed word and every module
// reads and writes it by field name. (Self-contained: Yosys takes no import inside a package.)
`resetall
`default_nettype none

package ejlb_pkg;
  // Frame bytes the classifier sees: Ethernet 14 + 802.1Q 4 + IPv4 with options 60 + UDP 8 +
  // LB 16 = 102, rounded up to a multiple of 8.
  localparam int HEADER_BYTES = 104;
  // Output header bytes the classifier produces (the LB header may be stripped); the rest of an
  // output frame comes from the stream.
  localparam int OUT_HEADER_BYTES = HEADER_BYTES - 16;

  typedef struct packed {
    logic [3:0]                    reason;    // ejlb.dataplane.tables.Drop: 0 forwards
    logic                          lb_known;  // the frame reached an LB instance (stage 2)
    logic [2:0]                    lb;        // that instance
    logic [15:0]                   member;    // its calendar entry (u16; the member id when forwarded)
    logic [1:0]                    version;   // {v3, v2}: which LB header version was counted
    logic                          strip;     // remove the 16-byte LB header
    logic [15:0]                   len;       // output frame length (padded to 60)
    logic [15:0]                   need_len;  // the input frame must be this long, else parse failure
    logic [OUT_HEADER_BYTES*8-1:0] hdr;       // first output bytes (byte k at 8k), zero past the packet
  } verdict_t;
endpackage

`resetall
