/****************************************************************************
 * fpgaslim: hand-written RTL for FINN layers that finn-plus 1.6.1 ships only
 * as HLS on Zynq-7000 / UltraScale+ parts (SPDX-License-Identifier: BSD-3-Clause)
 *
 * @brief	LabelSelect (top-K): the indices of the K largest of LABELS
 *		values, largest first, as FINN's LabelSelect (ONNX TopK): of
 *		equal values the lower index comes first. The values arrive PE
 *		per word, LABELS/PE words per frame; each word's PE values are
 *		inserted into a sorted list of K (value, index) entries in one
 *		cycle. At a frame's end the indices move to the output buffer,
 *		which sends them one per word (O_WIDTH bits each) while the next
 *		frame comes in; a frame's last word waits only while the
 *		previous frame's indices are still being sent.
 ***************************************************************************/

module fpgaslim_label_select #(
	int unsigned  PE = 1,
	int unsigned  LABELS = 10,
	int unsigned  K = 1,
	int unsigned  I_WIDTH = 8,
	bit  I_SIGNED = 1,
	int unsigned  O_WIDTH = 8,
	int unsigned  I_BITS = PE*I_WIDTH
)(
	input	logic  clk,
	input	logic  rst,

	input	logic [I_BITS-1:0]  idat,
	input	logic  ivld,
	output	logic  irdy,

	output	logic [O_WIDTH-1:0]  odat,
	output	logic  ovld,
	input	logic  ordy
);

	localparam int unsigned  FOLD = LABELS / PE;
	localparam int unsigned  IW = LABELS > 1? $clog2(LABELS) : 1;
	localparam int unsigned  CW = FOLD > 1? $clog2(FOLD) : 1;
	localparam int unsigned  KW = K > 1? $clog2(K) : 1;

	initial begin
		if(LABELS % PE != 0 || K < 1 || K > LABELS) begin
			$error("%m: need PE | LABELS and 1 <= K <= LABELS");
			$finish;
		end
	end

	//--- the sorted list of this frame --------------------------------------
	logic [K-1:0]               TVld = '0;
	logic [K-1:0][I_WIDTH-1:0]  TVal;
	logic [K-1:0][IW-1:0]       TIdx;
	logic [CW-1:0]  Cnt = '0;
	uwire  last = (Cnt == CW'(FOLD-1));

	logic  OBusy = 0;
	logic [K-1:0][IW-1:0]  OIdx;
	logic [KW-1:0]  OCnt = '0;

	assign	irdy = !(last && OBusy);
	uwire  take = ivld && irdy;

	// insertion of the word's PE values, one after the other (lower index first)
	logic [K-1:0]               vc[PE+1];
	logic [K-1:0][I_WIDTH-1:0]  valc[PE+1];
	logic [K-1:0][IW-1:0]       idxc[PE+1];
	always_comb begin
		vc[0] = (Cnt == '0)? '0 : TVld;
		valc[0] = TVal;
		idxc[0] = TIdx;
		for(int unsigned  e = 0; e < PE; e++) begin
			automatic logic [I_WIDTH-1:0]  v = idat[e*I_WIDTH +: I_WIDTH];
			automatic logic [IW-1:0]  ix = IW'(Cnt*PE + e);
			automatic logic [K-1:0]  gt;
			for(int unsigned  j = 0; j < K; j++)
				gt[j] = !vc[e][j] || (I_SIGNED? ($signed(v) > $signed(valc[e][j])) : (v > valc[e][j]));
			for(int unsigned  j = 0; j < K; j++) begin
				automatic int unsigned  jm = j > 0? j-1 : 0;
				if(gt[j] && (j == 0 || !gt[jm])) begin
					vc[e+1][j] = 1;  valc[e+1][j] = v;  idxc[e+1][j] = ix;
				end
				else if(gt[j]) begin
					vc[e+1][j] = vc[e][jm];  valc[e+1][j] = valc[e][jm];  idxc[e+1][j] = idxc[e][jm];
				end
				else begin
					vc[e+1][j] = vc[e][j];  valc[e+1][j] = valc[e][j];  idxc[e+1][j] = idxc[e][j];
				end
			end
		end
	end

	always_ff @(posedge clk) begin
		if(rst) begin
			TVld <= '0;
			Cnt <= '0;
			OBusy <= 0;
			OCnt <= '0;
		end
		else begin
			if(take) begin
				TVld <= vc[PE];
				TVal <= valc[PE];
				TIdx <= idxc[PE];
				Cnt <= last? '0 : Cnt + 1;
			end
			if(OBusy && ordy) begin
				OCnt <= (OCnt == KW'(K-1))? '0 : OCnt + 1;
				if(OCnt == KW'(K-1))  OBusy <= 0;
			end
			if(take && last) begin	// only when !OBusy (irdy)
				OIdx <= idxc[PE];
				OBusy <= 1;
				OCnt <= '0;
			end
		end
	end

	assign	ovld = OBusy;
	assign	odat = O_WIDTH'(OIdx[OCnt]);

endmodule : fpgaslim_label_select
