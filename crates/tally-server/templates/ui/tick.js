{#- The countdowns to reporting deadlines, ticked once a second in the
    page (as views::countdown writes them); a clock whose report was made
    does not tick. -#}
  function tick(){
    var now=Date.now()/1000;
    document.querySelectorAll('time[data-due]').forEach(function(t){
      var st=t.getAttribute('data-state'); if(st==='met'||st==='late'){return;}
      var left=Math.round(parseInt(t.getAttribute('data-due'),10)-now), neg=left<0, s=Math.abs(left);
      var d=Math.floor(s/86400), h=Math.floor(s%86400/3600), m=Math.floor(s%3600/60), sec=s%60;
      var txt=d>0?d+'d '+h+'h '+m+'m':h>0?h+'h '+m+'m '+sec+'s':m>0?m+'m '+sec+'s':sec+'s';
      t.textContent=(neg?'-':'')+txt;
    });
  }
  setInterval(tick,1000);
