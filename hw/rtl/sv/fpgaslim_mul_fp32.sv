/****************************************************************************
 * fpgaslim: hand-written RTL for FINN layers that finn-plus 1.6.1 ships only
 * as HLS on Zynq-7000 / UltraScale+ parts (SPDX-License-Identifier: BSD-3-Clause)
 *
 * @brief	Integer stream times a float32 constant, float32 result (FINN's
 *		ElementwiseMul of an integer accumulator by the graph's output
 *		scale). Bit-exact with FINN's Python execution, which multiplies
 *		in float64 (exact for A_WIDTH <= 29) and rounds once to float32:
 *		each constant is given as (sign, M, E) with c = M * 2^E exactly
 *		(M: up to 24 bits, from the float32 value); the exact product
 *		|a| * M is normalized and rounded to nearest, ties to even, to a
 *		24-bit significand; the biased exponent is L + E + 127 where L
 *		is the position of the product's leading one. The generator
 *		admits a constant only when no input can give a subnormal or an
 *		infinite result, so neither case needs logic here; a zero
 *		product gives a signed zero as IEEE 754 does.
 *		C_WORDS: the constant table, read in stream order and repeated
 *		every C_WORDS words (scalar: 1, per channel: C/PE).
 *		Two stages: the products (a DSP's multiplier and its register),
 *		then normalization and rounding into the output skid buffer.
 ***************************************************************************/

module fpgaslim_mul_fp32 #(
	int unsigned  PE = 1,
	int unsigned  A_WIDTH = 8,
	bit  A_SIGNED = 1,
	int unsigned  C_WORDS = 1,
	// per lane and word, lane 0 of word 0 first: sign, 24-bit M, E + 127 + 1024 (11 bits)
	parameter logic [C_WORDS*PE-1:0]         C_SIGN = '0,
	parameter logic [C_WORDS*PE*24-1:0]      C_MANT = '0,
	parameter logic [C_WORDS*PE*11-1:0]      C_EXP = '0,
	int unsigned  A_BITS = PE*A_WIDTH
)(
	input	logic  clk,
	input	logic  rst,

	input	logic [A_BITS-1:0]  adat,
	input	logic  avld,
	output	logic  ardy,

	output	logic [PE*32-1:0]  odat,
	output	logic  ovld,
	input	logic  ordy
);

	localparam int unsigned  PW = A_WIDTH + 24;	// product width
	localparam int unsigned  LW = $clog2(PW) + 1;

	uwire  srdy;
	// stage 1: the products |a| * M, their signs and exponents (registered)
	logic  S1Vld = 0;
	uwire  s1_load = !S1Vld || srdy;	// stage 1 moves on when the skid takes its word
	uwire  take = avld && s1_load;
	assign	ardy = s1_load;

	localparam int unsigned  IDX_W = C_WORDS > 1? $clog2(C_WORDS) : 1;
	logic [IDX_W-1:0]  Idx = '0;
	always_ff @(posedge clk) begin
		if(rst)  Idx <= '0;
		else if(take)  Idx <= (Idx == IDX_W'(C_WORDS-1))? '0 : Idx + 1;
	end
	always_ff @(posedge clk) begin
		if(rst)  S1Vld <= 0;
		else if(s1_load)  S1Vld <= avld;
	end

	uwire [PE*32-1:0]  r;
	for(genvar  i = 0; i < PE; i++) begin : genLane
		uwire [A_WIDTH-1:0]  ai = adat[i*A_WIDTH +: A_WIDTH];
		uwire  aneg = A_SIGNED && ai[A_WIDTH-1];
		uwire [A_WIDTH-1:0]  amag = aneg? -ai : ai;

		logic [PW-1:0]  P;	// |a| * M
		logic  Sgn;		// sign of the result
		logic [10:0]  Ce;	// E + 127 + 1024
		always_ff @(posedge clk) begin
			if(take) begin
				P <= PW'(amag) * PW'(C_MANT[(Idx*PE + i)*24 +: 24]);
				Sgn <= aneg ^ C_SIGN[Idx*PE + i];
				Ce <= C_EXP[(Idx*PE + i)*11 +: 11];
			end
		end

		// stage 2: position of the leading one, normalization, rounding
		logic [LW-1:0]  lead;
		always_comb begin
			lead = '0;
			for(int unsigned  k = 0; k < PW; k++)
				if(P[k])  lead = LW'(k);
		end

		// normalized to the leading one at bit PW+1 (two more bits: guard, sticky room)
		uwire [PW+1:0]  n = {P, 2'b00} << (PW - 1 - lead);
		uwire [23:0]  top = n[PW+1 -: 24];
		uwire  guard = n[PW+1-24];
		uwire  sticky = |n[PW+1-25:0];
		uwire  up = guard && (sticky || top[0]);
		uwire [24:0]  rounded = {1'b0, top} + 25'(up);
		uwire  carry = rounded[24];
		uwire [22:0]  frac = carry? rounded[23:1] : rounded[22:0];
		// biased exponent: lead + E + 127 (Ce holds E + 127 + 1024)
		uwire [11:0]  bexp = 12'(lead) + 12'(Ce) + 12'(carry) - 12'd1024;
		uwire  zero = (P == '0);
		assign	r[i*32 +: 32] = zero? {Sgn, 31'b0} : {Sgn, bexp[7:0], frac};
	end : genLane

	fpgaslim_skid #(.DATA_WIDTH(PE*32)) obuf (
		.clk, .rst,
		.idat(r), .ivld(S1Vld), .irdy(srdy),
		.odat, .ovld, .ordy
	);

endmodule : fpgaslim_mul_fp32
