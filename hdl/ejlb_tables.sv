// The lookup tables, written through the register bus into a shadow copy and made active by a
// commit, all at once:
//   - LB instances, epochs and the sender allow-list are registers: commit copies shadow -> active
//     in one cycle; the classifier reads every active register in one pipeline stage.
//   - calendar and member tables are RAMs with two banks: writes go to the inactive bank and a
//     commit flips `bank`. The classifier samples `bank` in the same stage as the registers and
//     carries it to its RAM reads, so one packet never mixes two table versions. Because the new
//     shadow bank holds the previous contents, the driver replays its writes after a commit; while
//     packets that sampled the old bank may still read it (HOLD cycles), writes are stalled.
//
//   Table     Storage                    Entries                       Words (ejlb_regmap_pkg *_W_*)
//   LB        registers, shadow+active   NUM_LBS                       CTRL (V4/V6_VALID, SLOT_BITS,
//                                                                      SLOT_XOR), MAC_HI/LO, IPV4, IP0-3
//   epoch     registers, shadow+active   NUM_LBS x NUM_EPOCHS          CTRL (VALID, CATCH_ALL, BOUNDED),
//                                                                      START_LO/HI, END_LO/HI
//   sender    registers, shadow+active   N_SENDERS for all LBs and     CTRL (VALID, V6, LB), IP0-3
//                                        both families (a CAM)
//   calendar  RAM, two banks             NUM_LBS x NUM_EPOCHS x 256    PAIR: slot 2k in 15:0, 2k+1 in 31:16
//   member    RAM, two banks             NUM_LBS x 2^MEMBER_ID_BITS    CTRL (VALID, DROP, KEEP_LB, V6,
//                                                                      PORT_BITS, BASE_PORT), MAC_HI/LO, IP0-3
`resetall
`default_nettype none

import ejlb_regmap_pkg::*;  // file scope: Yosys has no header imports

module ejlb_tables
#(
    parameter int HOLD = 8
) (
    input  logic                  clk,
    input  logic                  rst,
    // register bus (writes)
    input  logic                  wr_en,
    input  logic [ADDR_WIDTH-1:0] wr_addr,
    input  logic [31:0]           wr_data,
    output logic                  wr_ready,
    output logic                  bank,
    output logic                  busy,
    output logic [31:0]           commits,
    // active register tables, flat (entry-major, 32-bit words)
    output logic [NUM_LBS-1:0][7:0][31:0] lb_act,
    output logic [NUM_LBS*NUM_EPOCHS-1:0][4:0][31:0] ep_act,
    output logic [N_SENDERS-1:0][4:0][31:0] snd_act,
    // calendar read: {bank, lb, epoch, slot[8:1]} -> pair of member ids, one cycle later
    input  logic [13:0]           cal_addr,
    output logic [31:0]           cal_data,
    // member read: {bank, lb, member id} -> 7 words, one cycle later
    input  logic [3+MEMBER_ID_BITS:0] mem_addr,
    output logic [32*7-1:0]       mem_data
);
  localparam int MEM_DEPTH = 2 * (NUM_LBS << MEMBER_ID_BITS);

  logic [NUM_LBS-1:0][7:0][31:0] lb_sh;
  logic [NUM_LBS*NUM_EPOCHS-1:0][4:0][31:0] ep_sh;
  logic [N_SENDERS-1:0][4:0][31:0] snd_sh;
  logic [31:0] cal_ram[2*CALENDAR_COUNT];
  logic [32*7-1:0] mem_ram[MEM_DEPTH];
  logic [31:0] cal_q;  // registered RAM output (block RAM), inverted below
  assign cal_data = ~cal_q;
  logic [$clog2(HOLD+1)-1:0] hold;

  wire commit_wr = wr_en && wr_addr == ADDR_WIDTH'(CTRL_BASE + 4 * CTRL_W_COMMIT);
  assign busy = hold != 0;
  assign wr_ready = !busy;

  wire [31:0] wa = 32'(wr_addr);  // 32-bit compares: a block may end at 2^ADDR_WIDTH
  wire [ADDR_WIDTH-1:0] off_lb = wr_addr - ADDR_WIDTH'(LB_BASE);
  wire [ADDR_WIDTH-1:0] off_ep = wr_addr - ADDR_WIDTH'(EPOCH_BASE);
  wire [ADDR_WIDTH-1:0] off_snd = wr_addr - ADDR_WIDTH'(SENDER_BASE);
  wire [ADDR_WIDTH-1:0] off_cal = wr_addr - ADDR_WIDTH'(CALENDAR_BASE);
  wire [ADDR_WIDTH-1:0] off_mem = wr_addr - ADDR_WIDTH'(MEMBER_BASE);
  wire in_lb = wa >= LB_BASE && wa < LB_BASE + LB_STRIDE * LB_COUNT;
  wire in_ep = wa >= EPOCH_BASE && wa < EPOCH_BASE + EPOCH_STRIDE * EPOCH_COUNT;
  wire in_snd = wa >= SENDER_BASE && wa < SENDER_BASE + SENDER_STRIDE * SENDER_COUNT;
  wire in_cal = wa >= CALENDAR_BASE && wa < CALENDAR_BASE + CALENDAR_STRIDE * CALENDAR_COUNT;
  wire in_mem = wa >= MEMBER_BASE && wa < MEMBER_BASE + MEMBER_STRIDE * MEMBER_COUNT;
  wire do_wr = wr_en && wr_ready;

  // register tables: shadow writes, commit copies
  always_ff @(posedge clk) begin
    // constant-index writes with decoded enables (a variable index into these wide packed arrays
    // would become a barrel shifter of the whole table)
    for (int i = 0; i < NUM_LBS; i++)
      for (int w = 0; w < 8; w++)
        if (do_wr && in_lb && off_lb[8:6] == 3'(i) && off_lb[5:2] == 4'(w)) lb_sh[i][w] <= wr_data;
    for (int i = 0; i < NUM_LBS * NUM_EPOCHS; i++)
      for (int w = 0; w < 5; w++)
        if (do_wr && in_ep && off_ep[9:5] == 5'(i) && off_ep[4:2] == 3'(w)) ep_sh[i][w] <= wr_data;
    for (int i = 0; i < N_SENDERS; i++)
      for (int w = 0; w < 5; w++)
        if (do_wr && in_snd && off_snd[$clog2(N_SENDERS)+4:5] == $clog2(N_SENDERS)'(i) && off_snd[4:2] == 3'(w))
          snd_sh[i][w] <= wr_data;
    if (do_wr && commit_wr && wr_data[CTRL_GO_LSB]) begin
      lb_act <= lb_sh;
      ep_act <= ep_sh;
      snd_act <= snd_sh;
    end
    if (rst) begin
      lb_act <= '0;
      lb_sh <= '0;
      ep_act <= '0;
      ep_sh <= '0;
      snd_act <= '0;
      snd_sh <= '0;
    end
  end

  // commit control
  always_ff @(posedge clk) begin
    if (rst) begin
      bank <= 1'b0;
      hold <= '0;
      commits <= '0;
    end else if (do_wr && commit_wr && wr_data[CTRL_GO_LSB]) begin
      bank <= ~bank;
      hold <= HOLD[$bits(hold)-1:0];
      commits <= commits + 1;
    end else if (hold != 0) begin
      hold <= hold - 1'b1;
    end
  end

  // RAM tables: writes to the inactive bank. RAMs are not reset; they power up as zero, which must
  // mean "empty": a zero member word is invalid, and calendar words are stored inverted so that
  // zero reads as two unassigned (0xFFFF) slots.
  always_ff @(posedge clk) begin
    if (do_wr && in_cal) cal_ram[{~bank, off_cal[14:2]}] <= ~wr_data;
    if (do_wr && in_mem && off_mem[4:2] < 7)
      mem_ram[{~bank, off_mem[MEMBER_ID_BITS+7:5]}][32*off_mem[4:2]+:32] <= wr_data;
    cal_q <= cal_ram[cal_addr];
    mem_data <= mem_ram[mem_addr];
  end

endmodule

`resetall
